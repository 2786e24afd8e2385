//! A real headless Chromium, driven over the DevTools protocol, for the
//! dashboard's tests. Debian's `chromium` is installed on first use; the
//! browser runs with a throw-away profile and never reaches past loopback.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

/// Installs Debian's `chromium` once per machine (the same lock as the
/// other packages, so parallel test binaries never run apt together).
fn ensure_installed() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let status = Command::new("flock")
            .arg(std::env::temp_dir().join("tollgate-apt.lock"))
            .args([
                "sh",
                "-c",
                "command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq chromium >/dev/null; }",
            ])
            .stdin(Stdio::null())
            .status()
            .expect("run flock/apt-get");
        assert!(
            status.success(),
            "chromium is missing and could not be installed; install Debian's chromium package"
        );
        PathBuf::from("/usr/bin/chromium")
    })
    .clone()
}

/// A headless browser and its one tab.
pub struct Chromium {
    // Dropped last: the tab needs the browser's connection.
    pub tab: Arc<Tab>,
    _browser: Browser,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// A browser whose viewport is `width` x `height` CSS pixels.
    pub fn launch(width: u32, height: u32) -> Chromium {
        let path = ensure_installed();
        let profile = tempfile::tempdir().expect("profile dir");
        let args: Vec<&OsStr> = vec![
            OsStr::new("--disable-gpu"),
            OsStr::new("--no-first-run"),
            OsStr::new("--disable-extensions"),
            OsStr::new("--hide-scrollbars"),
            OsStr::new("--force-device-scale-factor=1"),
            // Tests serve loopback HTTPS with a certificate made for the run.
            OsStr::new("--ignore-certificate-errors"),
        ];
        let options = LaunchOptions::default_builder()
            .path(Some(path))
            .headless(true)
            .sandbox(false)
            .window_size(Some((width, height)))
            .user_data_dir(Some(profile.path().to_path_buf()))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(300))
            .build()
            .expect("launch options");
        let browser = Browser::new(options).expect("chromium starts");
        let tab = browser.new_tab().expect("a tab");
        // The window's size includes no browser chrome only in some modes: fix the viewport itself.
        tab.call_method(Emulation::SetDeviceMetricsOverride {
            width,
            height,
            device_scale_factor: 1.0,
            mobile: false,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })
        .expect("set the viewport");
        tab.set_default_timeout(Duration::from_secs(30));
        Chromium {
            tab,
            _browser: browser,
            _profile: profile,
        }
    }

    /// Opens `url` and waits for its load.
    pub fn open(&self, url: &str) {
        self.tab
            .navigate_to(url)
            .and_then(|tab| tab.wait_until_navigated())
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&self, expression: &str) -> Value {
        let result = self
            .tab
            .evaluate(expression, false)
            .unwrap_or_else(|e| panic!("evaluate {expression}: {e}"));
        result.value.unwrap_or(Value::Null)
    }

    /// Waits until `expression` is truthy in the page, for at most `within`;
    /// panics with `what` and the last value if it never is. The page does
    /// the waiting: a promise re-checks the expression on every DOM change
    /// (the dashboard re-renders on each update) and settles when it holds.
    pub fn wait_for(&self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_millis();
            let waiter = format!(
                "new Promise((resolve) => {{
                    const check = () => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }};
                    const first = check();
                    if (first) {{ resolve(first); return; }}
                    const observer = new MutationObserver(() => {{
                        const value = check();
                        if (value) {{ observer.disconnect(); resolve(value); }}
                    }});
                    observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                    setTimeout(() => {{ observer.disconnect(); resolve(check()); }}, {left});
                }})"
            );
            // A navigation in progress destroys the page the promise lives
            // in; wait for the new page, then ask again.
            let value = match self.tab.evaluate(&waiter, true) {
                Ok(result) => result.value.unwrap_or(Value::Null),
                Err(_) => {
                    let _ = self.tab.wait_until_navigated();
                    Value::Null
                }
            };
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != 0 && value != "";
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?} (last value {value})\npage: {}",
                self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
            );
        }
    }

    /// Types into the element matching `selector`, replacing its value.
    pub fn fill(&self, selector: &str, text: &str) {
        let element = self
            .tab
            .wait_for_element(selector)
            .unwrap_or_else(|e| panic!("no {selector}: {e}"));
        element.click().expect("focus the field");
        self.eval(&format!("document.querySelector({selector:?}).value = ''"));
        self.tab.type_str(text).expect("type");
    }

    /// Submits `token` in the dashboard's sign-in form, then waits until
    /// the page lists `tenants` tenants.
    pub fn sign_in(&self, token: &str, tenants: usize) {
        self.submit_token(token);
        self.wait_for(
            &format!("the dashboard lists {tenants} tenants"),
            &format!("document.querySelectorAll('tr[data-tenant]').length === {tenants}"),
            Duration::from_secs(30),
        );
    }

    /// Types `token` into the dashboard's sign-in form and submits it.
    pub fn submit_token(&self, token: &str) {
        self.fill("input[name=token]", token);
        self.eval("document.querySelector('[data-sign-in]').requestSubmit()");
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
        self.tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .expect("screenshot")
    }
}
