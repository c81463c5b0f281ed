//! Talking to systemd: `sd_notify` messages (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and
//! the health of the daemon's workers that decides whether the watchdog is fed.
//!
//! The protocol is one datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or
//! an abstract name after `@`); outside systemd the variable is unset and every call is a no-op.
//! It is small enough to speak directly rather than through a crate.
//!
//! The watchdog is fed from the supervisor's loop only while no worker has been busy with one
//! piece of work for longer than the watchdog allows: a worker stuck in a call that never
//! returns stops the feeding, and systemd restarts the daemon. A worker that is idle (waiting
//! for work, or for the store writer to take a batch) is healthy, however long it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::debug;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if it is listening.
pub fn sd_notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        debug!("sd_notify to {socket:?} failed: {e}");
    }
}

fn send(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        _ => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// The watchdog period systemd expects (`WatchdogSec=`), when it applies to this process.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `MONOTONIC_USEC=` for RELOADING=1: CLOCK_MONOTONIC now, in microseconds.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// A worker's name and when its current piece of work began (ms since the epoch; 0: idle).
type Part = (&'static str, Arc<AtomicU64>);

/// The daemon's workers, each busy or idle.
#[derive(Clone, Default)]
pub struct Health {
    parts: Arc<std::sync::Mutex<Vec<Part>>>,
    epoch: Arc<std::sync::OnceLock<Instant>>,
}

/// One worker's handle: mark the start and end of each piece of work.
#[derive(Clone)]
pub struct Worker {
    busy_since: Arc<AtomicU64>,
    epoch: Instant,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    /// Registers a worker by name (shown when it is stuck).
    pub fn worker(&self, name: &'static str) -> Worker {
        let busy_since = Arc::new(AtomicU64::new(0));
        if let Ok(mut parts) = self.parts.lock() {
            parts.push((name, Arc::clone(&busy_since)));
        }
        Worker {
            busy_since,
            epoch: self.epoch(),
        }
    }

    /// The first worker busy with one piece of work for longer than `limit`, and for how long.
    pub fn stuck(&self, limit: Duration) -> Option<(&'static str, Duration)> {
        let now = self.epoch().elapsed().as_millis() as u64;
        let parts = self.parts.lock().ok()?;
        parts.iter().find_map(|(name, since)| {
            let since = since.load(Ordering::Relaxed);
            let busy = Duration::from_millis(now.saturating_sub(since));
            (since != 0 && busy > limit).then_some((*name, busy))
        })
    }
}

impl Worker {
    /// Work begins (or goes on: a loop marks each turn).
    pub fn busy(&self) {
        // 0 means idle, so the clock starts at 1 ms.
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since.store(now, Ordering::Relaxed);
    }

    /// Waiting for work: healthy however long it lasts.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_busy_too_long_is_named_and_an_idle_one_never() {
        let health = Health::new();
        let reader = health.worker("log reader");
        let writer = health.worker("store writer");
        writer.idle();
        reader.busy();
        assert_eq!(health.stuck(Duration::from_secs(60)), None);
        std::thread::sleep(Duration::from_millis(30));
        let (name, busy) = health.stuck(Duration::from_millis(10)).expect("stuck");
        assert_eq!(name, "log reader");
        assert!(busy >= Duration::from_millis(20));
        reader.idle();
        assert_eq!(health.stuck(Duration::from_millis(10)), None);
    }

    #[test]
    fn notifications_reach_a_socket_by_path_and_by_abstract_name() -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path)?;
        send(path.as_os_str(), "READY=1\nSTATUS=ok")?;
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        let name = format!("csirt-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        send(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1")?;
        let n = abstract_listener.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        Ok(())
    }
}
