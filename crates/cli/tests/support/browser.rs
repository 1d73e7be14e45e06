//! WebDriver plumbing for the browser tests (`tests/web_ui.rs`): Debian's Chromium,
//! headless, driven through its chromedriver with thirtyfour.
//!
//! Every [`Browser`] has its own chromedriver (started in ~40 ms) and its own fresh
//! profile directory. Dropping it, also while a test panics, ends the WebDriver session
//! (thirtyfour's synchronous fallback), kills by PID any Chromium process still running
//! on that profile, kills the chromedriver and removes the profile.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thirtyfour::prelude::*;
use thirtyfour::{BrowserLogEntry, LoggingPrefsLogLevel};

use crate::support;

/// axe-core 4.12.1 (MPL-2.0; see `tests/assets/README.md`).
pub const AXE_JS: &str = include_str!("../assets/axe.min.js");

/// How long a page, a script or a WebDriver command may take on a busy 2-core machine.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the browser tests can run: chromedriver and chromium are there. Under
/// `CI=true` a missing one fails the test (see [`support::require_tool`]).
pub fn available() -> bool {
    support::require_tool("chromedriver") && support::require_tool("chromium")
}

/// Polls `check` every 100 ms until it yields `Some`, for at most `timeout`; panics
/// with `what` and the last state `describe` gives otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the test asks of the browser at start.
#[derive(Default, Clone)]
pub struct Options {
    /// Accept the self-signed certificate of a `--tls-self-signed` wharf.
    pub accept_insecure_certs: bool,
}

/// One headless Chromium session, quit on drop.
pub struct Browser {
    driver: Option<WebDriver>,
    chromedriver: tokio::process::Child,
    profile: tempfile::TempDir,
}

/// An accessibility rule broken on a page, as axe-core reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AxeViolation {
    pub id: String,
    pub impact: Option<String>,
    pub help: String,
    pub nodes: Vec<AxeNode>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct AxeNode {
    pub target: String,
    pub summary: String,
}

/// The focused element, as far as the keyboard tests care.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Focused {
    pub tag: String,
    pub id: String,
    pub name: String,
    pub text: String,
    pub href: String,
    /// Its `data-*` attributes.
    pub data: std::collections::BTreeMap<String, String>,
    pub outline_style: String,
    pub outline_width: String,
    /// Inside the viewport (the skip link moves on screen when focused).
    pub on_screen: bool,
}

impl Focused {
    /// Whether the focus ring can be seen: an outline of some width.
    pub fn ring_visible(&self) -> bool {
        self.outline_style != "none" && self.outline_width != "0px" && self.on_screen
    }
}

impl std::fmt::Display for Focused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}", self.tag)?;
        if !self.id.is_empty() {
            write!(f, " id={:?}", self.id)?;
        }
        if !self.name.is_empty() {
            write!(f, " name={:?}", self.name)?;
        }
        if !self.href.is_empty() {
            write!(f, " href={:?}", self.href)?;
        }
        write!(
            f,
            "> {:?} (outline {} {})",
            self.text, self.outline_style, self.outline_width
        )
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh headless Chromium session.
    pub async fn start() -> Browser {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("wharf-ui-profile-")
            .tempdir()
            .expect("profile dir");
        // A port taken between free_port() and chromedriver's bind shows up as an early
        // exit: try again on another port (bounded).
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = support::free_port();
            let mut chromedriver = tokio::process::Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start chromedriver");
            let url = format!("http://127.0.0.1:{port}");
            if let Err(e) = wait_driver_ready(&url, &mut chromedriver).await {
                last_error = e;
                let _ = chromedriver.kill().await;
                continue;
            }
            let mut browser = Browser {
                driver: None,
                chromedriver,
                profile,
            };
            match browser.new_session(&url, &opts).await {
                Ok(driver) => {
                    browser.driver = Some(driver);
                    return browser;
                }
                Err(e) => panic!("chromedriver did not start a Chromium session: {e}"),
            }
        }
        panic!("chromedriver did not come up: {last_error}");
    }

    async fn new_session(&self, url: &str, opts: &Options) -> WebDriverResult<WebDriver> {
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium_binary())?;
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ] {
            caps.add_arg(arg)?;
        }
        caps.add_arg(&format!(
            "--user-data-dir={}",
            self.profile.path().display()
        ))?;
        caps.set_logging_prefs("browser".to_string(), LoggingPrefsLogLevel::All)?;
        // An alert stays open, so that a test can see it (the default dismisses it).
        caps.set("unhandledPromptBehavior", "ignore")?;
        if opts.accept_insecure_certs {
            caps.accept_insecure_certs(true)?;
        }
        let driver = WebDriver::builder(url, caps)
            .request_timeout(COMMAND_TIMEOUT)
            .await?;
        driver.set_page_load_timeout(COMMAND_TIMEOUT).await?;
        driver.set_script_timeout(COMMAND_TIMEOUT).await?;
        Ok(driver)
    }

    pub fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("the session is open")
    }

    /// Ends the session (the normal way); `Drop` does the rest.
    pub async fn quit(mut self) {
        if let Some(d) = self.driver.take() {
            if let Err(e) = d.quit().await {
                eprintln!("quitting the WebDriver session failed: {e}");
            }
        }
    }

    pub async fn goto(&self, url: &str) {
        self.driver()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.driver()
            .current_url()
            .await
            .expect("current URL")
            .to_string()
    }

    pub async fn find(&self, css: &str) -> WebElement {
        let url = self.url().await;
        self.driver()
            .find(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on {url}: {e}"))
    }

    pub async fn find_all(&self, css: &str) -> Vec<WebElement> {
        self.driver()
            .find_all(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Runs a script and returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.driver()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
            .json()
            .clone()
    }

    /// Runs an asynchronous script (its last argument is the callback).
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.driver()
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
            .json()
            .clone()
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&self, method: &str, params: Value) -> Value {
        self.driver()
            .cdp()
            .send_raw(method, params)
            .await
            .unwrap_or_else(|e| panic!("CDP {method}: {e}"))
    }

    /// An exact viewport (the window frame would otherwise eat into it).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// `prefers-color-scheme: dark` (or light).
    pub async fn color_scheme(&self, dark: bool) {
        let value = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": value}]}),
        )
        .await;
        let matches = self
            .js(
                "return matchMedia('(prefers-color-scheme: ' + arguments[0] + ')').matches",
                vec![json!(value)],
            )
            .await;
        assert_eq!(matches, json!(true), "the {value} scheme is emulated");
    }

    /// Lets pages of `origin` read and write the clipboard.
    pub async fn grant_clipboard(&self, origin: &str) {
        self.cdp(
            "Browser.grantPermissions",
            json!({"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
        )
        .await;
    }

    pub async fn read_clipboard(&self) -> String {
        let v = self
            .js_async(
                "const done = arguments[arguments.length - 1];
                 navigator.clipboard.readText().then(t => done({ok: t}), e => done({err: String(e)}));",
                vec![],
            )
            .await;
        match v["ok"].as_str() {
            Some(t) => t.to_string(),
            None => panic!("reading the clipboard failed: {v}"),
        }
    }

    pub async fn screenshot(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        self.driver()
            .screenshot(path)
            .await
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
    }

    /// Presses keys (text, or `Key::Tab` and the like) on whatever has the focus.
    pub async fn keys(&self, keys: impl Into<TypingData>) {
        self.driver()
            .action_chain()
            .send_keys(keys)
            .perform()
            .await
            .expect("keyboard input");
    }

    /// The focused element and whether its focus ring shows.
    pub async fn focused(&self) -> Focused {
        let v = self
            .js(
                "const e = document.activeElement;
                 const s = getComputedStyle(e);
                 const r = e.getBoundingClientRect();
                 return {tag: e.tagName.toLowerCase(), id: e.id || '', name: e.getAttribute('name') || '',
                         text: (e.innerText || e.value || '').trim().slice(0, 60), href: e.getAttribute('href') || '',
                         data: Object.assign({}, e.dataset),
                         outline_style: s.outlineStyle, outline_width: s.outlineWidth,
                         on_screen: r.right > 0 && r.bottom > 0 && r.left < innerWidth && r.top < innerHeight};",
                vec![],
            )
            .await;
        serde_json::from_value(v).expect("focused element")
    }

    /// Presses Tab until `wanted` has the focus (at most `max` presses), asserting that
    /// every element it stops on shows a visible focus ring; returns the stops. Where
    /// Tab starts from is the browser's business (after a page change, Chromium may
    /// start after the link that led there), so the search may wrap around the page.
    pub async fn tab_to(&self, max: usize, wanted: impl Fn(&Focused) -> bool) -> Vec<Focused> {
        let mut stops = Vec::new();
        for _ in 0..max {
            self.keys(Key::Tab).await;
            let f = self.focused().await;
            if f.tag == "body" {
                // Past the last control the focus leaves the page (headless has no
                // browser bar to take it); the next Tab starts at the top again.
                stops.push(f);
                continue;
            }
            assert!(
                f.ring_visible(),
                "the keyboard focus on {f} shows no focus ring (stops so far: {})",
                list(&stops)
            );
            let done = wanted(&f);
            stops.push(f);
            if done {
                return stops;
            }
        }
        panic!(
            "{max} presses of Tab did not reach the wanted control; stops: {}",
            list(&stops)
        );
    }

    /// Every entry of the browser's console since the last call.
    pub async fn console(&self) -> Vec<BrowserLogEntry> {
        self.driver()
            .get_log("browser")
            .await
            .expect("browser console log")
    }

    /// Console entries at level SEVERE (errors, CSP violations, failed loads).
    pub async fn severe_console(&self) -> Vec<String> {
        self.console()
            .await
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .map(|e| e.message)
            .collect()
    }

    /// axe-core's WCAG 2 A and AA violations on the current page.
    pub async fn axe(&self) -> Vec<AxeViolation> {
        let loaded = self.js("return typeof axe !== 'undefined'", vec![]).await;
        if loaded != json!(true) {
            self.js(AXE_JS, vec![]).await;
        }
        let v = self
            .js_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}, resultTypes: ['violations']})
                   .then(r => done({ok: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary || ''}))}))}),
                         e => done({err: String(e)}));",
                vec![],
            )
            .await;
        if let Some(e) = v.get("err") {
            panic!("axe failed: {e}");
        }
        serde_json::from_value(v["ok"].clone()).expect("axe violations")
    }

    /// Inputs, selects and text areas that no label names (hidden and button-like
    /// inputs aside).
    pub async fn unlabelled_controls(&self) -> Vec<String> {
        let v = self
            .js(
                "const out = [];
                 for (const el of document.querySelectorAll('input, select, textarea')) {
                   const t = (el.getAttribute('type') || '').toLowerCase();
                   if (['hidden', 'submit', 'button', 'reset', 'image'].includes(t)) continue;
                   const named = (el.labels && el.labels.length && [...el.labels].some(l => l.textContent.trim()))
                     || (el.getAttribute('aria-label') || '').trim()
                     || (el.getAttribute('aria-labelledby') || '').split(/\\s+/).some(id => id && document.getElementById(id));
                   if (!named) out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? '[name=' + el.name + ']' : ''));
                 }
                 return out;",
                vec![],
            )
            .await;
        serde_json::from_value(v).expect("unlabelled controls")
    }

    /// The text of an open alert, if a page opened one.
    pub async fn alert_text(&self) -> Option<String> {
        self.driver().get_alert_text().await.ok()
    }

    /// The browser's cookies for the current page (HttpOnly ones included).
    pub async fn cookies(&self) -> Vec<Cookie> {
        self.driver().get_all_cookies().await.expect("cookies")
    }

    pub async fn add_cookie(&self, name: &str, value: &str) {
        let mut c = Cookie::new(name, value);
        c.set_path("/");
        self.driver().add_cookie(c).await.expect("add cookie");
    }

    /// Waits until the element's text is `wanted`; returns every text it had meanwhile.
    pub async fn wait_text(&self, css: &str, wanted: &str, timeout: Duration) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css).await;
            if seen.last() != Some(&t) {
                seen.push(t.clone());
            }
            if t == wanted {
                return seen;
            }
            if Instant::now() > deadline {
                panic!("{css} did not say {wanted:?} within {timeout:?}; it said {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the current URL satisfies `ok` (after a click or a submit).
    pub async fn wait_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for(what, Duration::from_secs(60), || async {
            let url = self.url().await;
            if ok(&url) {
                Ok(Some(url))
            } else {
                Err(format!("at {url}"))
            }
        })
        .await
    }
}

fn list(stops: &[Focused]) -> String {
    stops
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

fn chromium_binary() -> String {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    "chromium".to_string()
}

/// Waits (at most 30 s) until chromedriver answers `/status` with `ready`.
async fn wait_driver_ready(url: &str, child: &mut tokio::process::Child) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver exited: {status}"));
        }
        if let Ok(r) = client.get(format!("{url}/status")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["value"]["ready"] == json!(true) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err("no ready /status within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PIDs of processes whose command line names `profile` (the Chromium of one session).
fn processes_using(profile: &Path) -> Vec<i32> {
    let needle = format!("--user-data-dir={}", profile.display());
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.split('\0').any(|a| a == needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

impl Drop for Browser {
    fn drop(&mut self) {
        // thirtyfour ends a session that was not quit with a synchronous DELETE.
        drop(self.driver.take());
        let _ = self.chromedriver.start_kill();
        // Whatever Chromium process is still on this profile: killed by PID.
        let profile: PathBuf = self.profile.path().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = processes_using(&profile);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The profile's TempDir is removed when it drops, after this.
    }
}
