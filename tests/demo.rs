//! `tollgate demo`, as the README's first command runs it: the gateway, the
//! mock, three tenants and live traffic; it reaches every verdict, its
//! dashboard shows every tenant with its alert level in a real headless
//! Chromium, and it ends cleanly on Ctrl-C (SIGINT).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::chromium::Chromium;

#[test]
fn the_demo_reaches_every_verdict_and_stops_cleanly_on_ctrl_c() {
    let mut child = support::tollgate()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Watch the live table until every verdict has been seen.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut totals = [0u64; 4];
    let mut url = None;
    let mut dashboard = None;
    let mut output = Vec::new();
    while totals.contains(&0) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "the demo did not reach every verdict: {totals:?}\n{}",
                    output.join("\n")
                )
            });
        if let Some(rest) = line.strip_prefix("gateway: ") {
            url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.trim_start().strip_prefix("dashboard: ") {
            let page = rest.split_whitespace().next().map(str::to_owned);
            let token = rest
                .split("admin token ")
                .nth(1)
                .and_then(|t| t.split(';').next())
                .map(str::to_owned);
            dashboard = page.zip(token);
        }
        if line.starts_with("--- ") {
            totals = [0; 4];
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if matches!(fields.first(), Some(&("acme" | "globex" | "initech"))) && fields.len() >= 12 {
            for (total, field) in totals.iter_mut().zip(&fields[8..12]) {
                *total += field.parse::<u64>().unwrap_or(0);
            }
        }
        output.push(line);
    }
    let url = url.expect("the demo printed its URL");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (page, token) = dashboard.expect("the demo printed its dashboard and token");
    dashboard_shows_every_tenant(&page, &token);

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        rest.push(line);
    }
    let exit = child.wait().expect("the demo exits");
    assert!(exit.success(), "exit {exit:?}\n{}", rest.join("\n"));
    let rest = rest.join("\n");
    assert!(rest.contains("tollgate demo: stopped cleanly"), "{rest}");
    let summary = rest.lines().find(|l| l.starts_with("decisions: ")).expect("a summary");
    for verdict in ["admit", "downgrade", "throttle", "reject"] {
        let count: u64 = summary
            .split(", ")
            .find_map(|part| {
                part.trim_start_matches("decisions: ")
                    .strip_prefix(&format!("{verdict} "))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "no {verdict} in {summary}");
    }
    assert!(summary.contains("error 0"), "{summary}");
}

/// Signs in to the demo's dashboard and finds each demo tenant there with
/// an alert level, its badge saying the same.
fn dashboard_shows_every_tenant(page: &str, token: &str) {
    let browser = Chromium::launch(1280, 900);
    browser.open(page);
    browser.sign_in(token, 3);
    for tenant in ["acme", "globex", "initech"] {
        let row = format!("document.querySelector('tr[data-tenant=\"{tenant}\"]')");
        // One read of both, so a live re-render cannot come between them.
        let shown = browser.eval(&format!(
            "{row}.getAttribute('data-level') + ' ' + {row}.querySelector('.level').textContent"
        ));
        let shown = shown.as_str().unwrap_or_default();
        let (level, badge) = shown.split_once(' ').unwrap_or_else(|| panic!("{tenant}: {shown:?}"));
        assert!(
            ["green", "yellow", "orange", "red"].contains(&level),
            "{tenant}: {shown:?}"
        );
        assert_eq!(badge, level, "{tenant}'s badge");
    }
}
