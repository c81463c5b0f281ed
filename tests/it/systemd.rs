//! The daemon as systemd sees it: the `sd_notify` messages on a real notification socket
//! through start, watchdog, reload and stop, and a clean exit within 5 seconds of SIGTERM.

use crate::helpers::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Receives notifications until one satisfies `want`; returns it, and fails after 20 s with
/// everything received.
fn expect(socket: &UnixDatagram, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no matching notification; received: {seen:#?}"
        );
        socket
            .set_read_timeout(Some(left))
            .expect("set the socket timeout");
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(message.clone());
        if want(&message) {
            return message;
        }
    }
}

#[test]
fn notifies_ready_watchdog_reloading_and_stopping_and_stops_within_five_seconds() {
    let env = Env::new(Backend::Sqlite);
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    std::fs::create_dir_all(env.dir.path().join("log")).expect("log dir");
    let mut child = env
        .command(&["daemon"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the daemon");
    let pid = Pid::from_raw(child.id() as i32);
    let mut seen = Vec::new();

    let ready = expect(&socket, &mut seen, |m| m.starts_with("READY=1"));
    assert!(
        ready.contains(
            "STATUS=14 playbooks, 1 log patterns; 0 open incidents; outbox 0 pending, 0 failed"
        ),
        "{ready}"
    );
    // WatchdogSec=1s: fed every half second.
    expect(&socket, &mut seen, |m| m == "WATCHDOG=1");
    let first = Instant::now();
    expect(&socket, &mut seen, |m| m == "WATCHDOG=1");
    assert!(first.elapsed() < Duration::from_secs(2), "{seen:#?}");

    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    let reloading = expect(&socket, &mut seen, |m| m.starts_with("RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    expect(&socket, &mut seen, |m| m.starts_with("READY=1"));

    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let asked = Instant::now();
    expect(&socket, &mut seen, |m| m.starts_with("STOPPING=1"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}
