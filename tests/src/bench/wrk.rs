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
    /// wrk's own CPU time (user + system), in s: on a machine whose cores
    /// wrk shares with the server, what the load costs is throughput the
    /// server does not get.
    pub load_cpu: f64,
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

    /// wrk's CPU per request, in µs.
    pub fn load_cpu_us(&self) -> f64 {
        self.load_cpu * 1e6 / self.requests.max(1.0)
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
            load_cpu: runs.iter().map(|r| r.load_cpu).sum(),
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
    let request = format!(
        r#"wrk.format('POST', '/api/v1/verify',
      {{['Content-Type'] = 'application/json', ['Authorization'] = 'Bearer {verifier}'}},
      '{{"apiKey":"' .. keys[k] .. '"}}')"#
    );
    cycling(shape, node, path, seconds, keys, &request)
}

/// `GET path` made by the same Lua as [`run`]'s verify requests (a
/// `request()` call cycling through as many formatted requests): a
/// baseline whose load costs wrk what verify's does.
pub fn run_get_cycling(
    shape: (usize, usize),
    node: &Running,
    path: &str,
    seconds: u64,
    cycle: usize,
) -> Wrk {
    let lines = vec![String::new(); cycle];
    let request = format!("wrk.format('GET', '{path}')");
    cycling(shape, node, path, seconds, &lines, &request)
}

/// wrk whose `request()` returns, in turn, `request` (a Lua expression of
/// `keys[k]`) made for each line of `keys`.
fn cycling(
    shape: (usize, usize),
    node: &Running,
    path: &str,
    seconds: u64,
    keys: &[String],
    request: &str,
) -> Wrk {
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
-- Each thread cycles through a share of the list of its own: no thread
-- asks for a key another has just put in the cache, however far their
-- rates drift apart (starting half a list apart on one shared list, one
-- thread caught up with the other's trail within a 10 s run).
function setup(thread)
  thread:set("share", threads)
  threads = threads + 1
end
function init(args)
  local first = math.floor(share * #keys / {threads}) + 1
  local last = math.floor((share + 1) * #keys / {threads})
  for k = first, last do
    requests[#requests + 1] = {request}
  end
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
    // Through bash, whose `times` says what its child (wrk) cost.
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", r#"wrk "$@"; s=$?; times >&2; exit $s"#, "wrk"]);
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
    let out = cmd.arg(&url).output().expect("bash runs");
    let seconds = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wrk failed (apt-get install wrk): {errors}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let load_cpu = children_cpu(&errors);
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
        load_cpu,
    }
}

/// The children's user + system time from bash's `times` (its last line:
/// "0m1.234s 0m0.567s"), in s; NaN when it is not there.
fn children_cpu(stderr: &str) -> f64 {
    let seconds = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    stderr
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().map(seconds).sum::<Option<f64>>())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_cpu_is_read_from_bash_times() {
        let times = "0m0.003s 0m0.001s\n1m2.500s 0m0.250s\n";
        assert!((super::children_cpu(times) - 62.75).abs() < 1e-9);
        assert!(super::children_cpu("").is_nan());
    }
}
