//! A real `redis-server` on a loopback port, for the tests of the fleet's
//! shared ledger. Installed from Debian's packages on first use; persisted
//! with `appendfsync always`, so a killed server comes back with every
//! write it acknowledged.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The server's log lines since it (re)started.
    log: Mutex<Receiver<String>>,
}

/// Installs `redis-server` once per machine (a lock keeps parallel test
/// binaries from running apt at the same time).
fn ensure_installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("flock")
            .arg(std::env::temp_dir().join("tollgate-apt.lock"))
            .args([
                "sh",
                "-c",
                "command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq redis-server >/dev/null; }",
            ])
            .stdin(Stdio::null())
            .status()
            .expect("run flock/apt-get");
        assert!(
            status.success(),
            "redis-server is missing and could not be installed; install Debian's redis-server package"
        );
    });
}

impl RedisServer {
    pub fn start() -> RedisServer {
        ensure_installed();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            log: Mutex::new(channel().1),
        };
        // A port just freed can be taken again by another test: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start; see {}", server.dir.path().display());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no shutdown save, as a crash or a lost node.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the port still accepts connections, and nothing answers,
    /// as a server that hangs.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT, after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("redis-server runs");
        // SAFETY: our own child, not reaped while `self.child` holds it.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    }

    /// Starts again on the same port and data, after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// Waits for a log line containing `needle` (a server's own account of
    /// an event, such as a failed background save); false after `within`.
    pub fn logged(&self, needle: &str, within: Duration) -> bool {
        let log = self.log.lock().unwrap();
        let until = Instant::now() + within;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Runs a command with `redis-cli`, returning its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts the server; true once it says it accepts connections.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--logfile", ""])
            // Lets a test move `dir`, to make a save fail.
            .args(["--enable-protected-configs", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("Ready to accept connections") {
                ready = true;
                break;
            }
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        // Keep reading so the server never blocks on a full pipe; the lines
        // go to `logged`.
        let (sender, log) = channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        self.log = Mutex::new(log);
        self.child = Some(child);
        true
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
