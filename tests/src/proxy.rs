//! A fault-injecting TCP proxy: put it between a process and the real
//! RabbitMQ to cut, refuse or stall that process's connections without
//! touching the broker every other test shares.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Close every new connection at once.
    Refuse,
    /// Accept, but forward nothing (on new and open connections) until the
    /// mode changes: a broker that hangs.
    Stall,
    /// Forward what clients send, hold what the server answers until the
    /// mode changes: a broker whose confirms are slow to come.
    HoldReplies,
    /// Forward both ways, each piece of what the server answers after this
    /// long: a slow link, which widens every window between a client's
    /// request and its answer.
    SlowReplies(Duration),
}

impl Mode {
    /// Whether bytes may go the way `upstream` says (client to server).
    fn forwards(self, upstream: bool) -> bool {
        match self {
            Self::Pass | Self::Refuse | Self::SlowReplies(_) => true,
            Self::Stall => false,
            Self::HoldReplies => upstream,
        }
    }

    /// How long bytes going the way `upstream` says wait before going on.
    fn delay(self, upstream: bool) -> Option<Duration> {
        match self {
            Self::SlowReplies(delay) if !upstream => Some(delay),
            _ => None,
        }
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, _) = watch::channel(Mode::Pass);
        let open = Arc::new(Mutex::new(Vec::new()));
        let (mode_rx, conns) = (mode.subscribe(), Arc::clone(&open));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *mode_rx.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let mode = mode_rx.clone();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, mode.clone(), true) => {}
                        _ = pump(sr, cw, mode, false) => {}
                    }
                });
                conns.lock().expect("proxy lock").push(task.abort_handle());
            }
        });
        Self {
            addr,
            mode,
            open,
            accept: accept.abort_handle(),
        }
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Drops every open connection (both sides see it closed).
    pub fn cut(&self) {
        for task in self.open.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    upstream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The mode after the delay decides: a change made meanwhile (say,
        // to hold replies) applies to what was read before it.
        let delay = mode.borrow().delay(upstream);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if mode.wait_for(|m| m.forwards(upstream)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
