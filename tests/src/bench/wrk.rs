//! `wrk` as the benches run it: its figures, and what the run cost the
//! server.

use std::io::Write;
use std::time::Instant;

use super::cpu_seconds;
use crate::Running;

/// wrk's figures, and what the run cost the server: one run, or several
/// merged (`Wrk::merged`).
#[derive(Clone, Copy)]
pub struct Wrk {
    pub requests: f64,
    pub seconds: f64,
    /// Median, and for merged runs the median of the runs' medians.
    pub p50_us: f64,
    /// For merged runs the worst of the runs'.
    pub p99_us: f64,
    /// The server process's CPU time (user + system) over the run, in s.
    pub cpu: f64,
}

impl Wrk {
    pub fn rps(&self) -> f64 {
        self.requests / self.seconds
    }

    /// Server CPU per answered request, in µs: what one request costs
    /// whatever shares the cores with it.
    pub fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.requests.max(1.0)
    }

    /// Runs taken in turns with a baseline's, as one: totals over totals.
    pub fn merged(runs: &[Wrk]) -> Wrk {
        let mut p50: Vec<f64> = runs.iter().map(|r| r.p50_us).collect();
        p50.sort_by(f64::total_cmp);
        Wrk {
            requests: runs.iter().map(|r| r.requests).sum(),
            seconds: runs.iter().map(|r| r.seconds).sum(),
            p50_us: p50.get(p50.len() / 2).copied().unwrap_or(0.0),
            p99_us: runs.iter().map(|r| r.p99_us).fold(0.0, f64::max),
            cpu: runs.iter().map(|r| r.cpu).sum(),
        }
    }

    /// "N req/s, p50 …, p99 …"
    pub fn summary(&self) -> String {
        format!(
            "{:.0} req/s, p50 {}, p99 {}",
            self.rps(),
            latency(self.p50_us),
            latency(self.p99_us)
        )
    }
}

pub fn latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// wrk's latency ("372.00us", "1.95ms", "1.02s") in µs.
pub fn wrk_latency_us(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// `wrk` with (threads, connections) of its own against `node`; with
/// `keys`, `POST /api/v1/verify` cycling through them as `verifier`
/// (requests formatted once in each thread's `init`), else `GET path`.
pub fn run(
    shape: (usize, usize),
    node: &Running,
    path: &str,
    seconds: u64,
    keys: Option<(&[String], &str)>,
) -> Wrk {
    let Some((keys, verifier)) = keys else {
        return run_script(shape, node, path, seconds, None);
    };
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("keys");
    let mut f = std::fs::File::create(&list).unwrap();
    for k in keys {
        writeln!(f, "{k}").unwrap();
    }
    let script = format!(
        r#"
local keys = {{}}
for line in io.lines("{list}") do keys[#keys + 1] = line end
local requests = {{}}
local i = 0
local threads = 0
-- Each thread starts its own share of the list away from the others, so
-- that no thread trails another over keys it has just put in the cache.
function setup(thread)
  thread:set("start", threads)
  threads = threads + 1
end
function init(args)
  for k = 1, #keys do
    requests[k] = wrk.format('POST', '/api/v1/verify',
      {{['Content-Type'] = 'application/json', ['Authorization'] = 'Bearer {verifier}'}},
      '{{"apiKey":"' .. keys[k] .. '"}}')
  end
  i = math.floor(start * #keys / {threads})
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"#,
        list = list.display(),
        threads = shape.0,
    );
    run_script(shape, node, path, seconds, Some(&script))
}

/// `wrk` against `node`'s `path`, its requests made by the Lua `script`
/// when there is one. Panics if any answer was not a 2xx.
pub fn run_script(
    (threads, connections): (usize, usize),
    node: &Running,
    path: &str,
    seconds: u64,
    script: Option<&str>,
) -> Wrk {
    let url = node.url(path);
    let pid = node.child.id().unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        let file = dir.path().join("load.lua");
        std::fs::write(&file, script).unwrap();
        cmd.arg("-s").arg(&file);
    }
    let began = Instant::now();
    let out = cmd
        .arg(&url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let seconds = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    assert!(!text.contains("Non-2xx"), "wrk saw error answers: {text}");
    // "  123456 requests in 10.00s, …"
    let (requests, wrk_seconds) = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let n = words.next().and_then(|n| n.parse().ok());
            let s = words
                .nth(2)
                .map(|s| wrk_latency_us(s.trim_end_matches(',')) / 1e6);
            (n.unwrap_or(0.0), s.unwrap_or(seconds))
        })
        .unwrap_or((0.0, seconds));
    Wrk {
        requests,
        seconds: wrk_seconds,
        p50_us: wrk_latency_us(&field("50%")),
        p99_us: wrk_latency_us(&field("99%")),
        cpu,
    }
}
