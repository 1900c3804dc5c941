//! The live inspector with an agent: webhooks on its event stream, read raw as a browser's
//! `fetch` would, the agent's local inspector, and the page itself in a real headless
//! Chromium driven over WebDriver. (The stream's access and the page's headers are
//! relay-server's own `inspector` tests.)

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fantoccini::{ClientBuilder, Locator};
use hookrelay_e2e::live::*;
use hookrelay_e2e::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

#[tokio::test]
async fn a_webhook_arrives_as_received_then_its_attempt() {
    let (server, token) = server_with_channel().await;
    create_channel(&server, "other", json!({})).await;
    let target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = Some(protocol::ChannelId::parse(CHANNEL).expect("valid"));
    config.token = Some(token.clone());
    let _agent = start_agent(config).await;
    let (_, live) = open_live(&server, CHANNEL, Some(&token)).await;
    let mut live = live.expect("stream open");

    // Another channel's webhook (stored and queued: it has no agent) is not on this stream.
    let queued = send(
        &client(),
        "POST",
        &format!("{}/h/other/elsewhere", server.url()),
        &[],
        "not yours",
    )
    .await;
    assert_eq!(queued.status, 202);
    let answer = send(
        &client(),
        "POST",
        &format!("{}/h/{CHANNEL}/github?x=1", server.url()),
        &[("content-type", b"application/json")],
        r#"{"zen":"hi"}"#,
    )
    .await;
    assert_eq!(answer.status, 201);
    let id = answer.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ASCII id");

    let (name, received) = live.next().await.expect("an event");
    assert_eq!(name, "received", "{received}");
    assert_eq!(received["id"], id);
    assert_eq!(received["method"], "POST");
    assert_eq!(received["path"], "/github");
    assert_eq!(received["query"], "x=1");
    assert_eq!(received["body_bytes"], 12);
    // Received as it was stored: before any attempt.
    assert_eq!(received["status"], "delivering");
    assert_eq!(received["attempts"], 0);

    let (name, attempt) = live.next().await.expect("an event");
    assert_eq!(name, "attempt", "{attempt}");
    assert_eq!(attempt["id"], id);
    assert_eq!(attempt["status"], "delivered");
    assert_eq!(attempt["attempt"]["n"], 1);
    assert_eq!(attempt["attempt"]["kind"], "live");
    assert_eq!(attempt["attempt"]["status"], 201);
    assert!(attempt["attempt"]["headers"].is_null(), "no response data");
}

// ---- the page in a real browser ----

/// The body of the browser test's GitHub webhook.
const PR_BODY: &str =
    r#"{"action":"opened","number":42,"pull_request":{"title":"Add the inspector"}}"#;

/// Upper bound for the whole browser test, start-up of Chromium included.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);
/// How often the test looks at the page while it waits for something to appear.
const POLL: Duration = Duration::from_millis(50);
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str =
    "`bash .ci/run` installs them (apt-get install -y chromium chromium-driver curl)";

/// A chromedriver on a free loopback port, in a process group of its own. Dropping it (the
/// test passed, failed or timed out) kills the group: chromedriver and any Chromium it
/// started.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    /// Starts chromedriver and waits until it reports ready. Panics, naming what installs
    /// them, when Chromium, chromedriver or curl is missing.
    async fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: {INSTALL}"
        );
        let binary = on_path("chromedriver");
        on_path("curl");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(binary)
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_owned(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let ready = async {
            loop {
                let req = axum::http::Request::get(&status)
                    .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                    .expect("valid request");
                if let Ok(resp) = client().request(req).await {
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    if body.is_ok_and(|b| {
                        serde_json::from_slice::<Value>(&b)
                            .is_ok_and(|v| v["value"]["ready"] == true)
                    }) {
                        return;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(DEADLINE, ready)
            .await
            .expect("chromedriver ready within the deadline");
        driver
    }
}

/// The path of the program `name` on `PATH`; panics, naming what installs it, when missing.
fn on_path(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name} is not on PATH: {INSTALL}"))
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The negative id names the process group: chromedriver and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `css` matches an element of the page, for at most [`DEADLINE`].
async fn wait_for(browser: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(DEADLINE)
        .every(POLL)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until `script` (a function body) returns `true` in the page, for at most
/// [`DEADLINE`].
async fn wait_for_script(browser: &fantoccini::Client, script: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let done = browser.execute(script, vec![]).await.expect("script runs");
        if done == json!(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never true: {script}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Fails when the browser's console logged an error (`SEVERE`: an uncaught exception,
/// `console.error`, a CSP violation, or a request answered 4xx/5xx such as a 401 from the API
/// or a 404 for a favicon) since the last call. chromedriver keeps the console of a session
/// started with `goog:loggingPrefs` and hands out what is new on
/// `POST /session/{id}/se/log`, which fantoccini has no method for.
async fn assert_no_console_errors(browser: &fantoccini::Client, driver: &Chromedriver, when: &str) {
    let session = browser
        .session_id()
        .await
        .expect("session id")
        .expect("a session");
    let req = axum::http::Request::post(format!("{}/session/{session}/se/log", driver.url))
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from_static(br#"{"type":"browser"}"#))
                .map_err(|e| match e {})
                .boxed(),
        )
        .expect("valid request");
    let resp = client().request(req).await.expect("chromedriver answers");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("log read")
        .to_bytes();
    let log: Value = serde_json::from_slice(&body).expect("JSON log");
    let entries = log["value"].as_array().expect("a list of log entries");
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(
        errors.is_empty(),
        "console errors while {when}: {errors:#?}"
    );
}

/// A new headless Chromium session on `driver`, its console kept for
/// [`assert_no_console_errors`].
async fn chromium(driver: &Chromedriver) -> fantoccini::Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800"],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal");
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

#[tokio::test]
async fn the_inspector_page_shows_deliveries_live_replays_and_copies_curl() {
    let driver = Chromedriver::start().await;
    tokio::time::timeout(BROWSER_DEADLINE, inspect_in_chromium(&driver))
        .await
        .expect("the browser test finishes within its deadline");
}

async fn inspect_in_chromium(driver: &Chromedriver) {
    let (server, token) = server_with_channel().await;
    let mut target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = Some(protocol::ChannelId::parse(CHANNEL).expect("valid"));
    config.token = Some(token.clone());
    let _agent = start_agent(config).await;

    let browser = chromium(driver).await;

    // A registered channel: the page asks for its token, knowing from the page itself that
    // one is needed, without an API call (a 401 in the console) and with an icon of its own
    // (no /favicon.ico to 404).
    browser
        .goto(&format!("{}/c/{CHANNEL}", server.url()))
        .await
        .expect("page loads");
    let input = wait_for(&browser, "#login:not([hidden]) #token").await;
    wait_for_script(&browser, "return document.readyState === 'complete'").await;
    wait_for_script(
        &browser,
        "return performance.getEntriesByType('resource')
           .some((r) => r.name.endsWith('/c/assets/favicon.svg'))",
    )
    .await;
    let api_calls = browser
        .execute(
            "return performance.getEntriesByType('resource')
               .map((r) => r.name).filter((name) => name.includes('/api/'))",
            vec![],
        )
        .await
        .expect("resource timings");
    assert_eq!(
        api_calls,
        json!([]),
        "no API call before the token is given"
    );
    assert_no_console_errors(&browser, driver, "loading the page").await;
    input.send_keys(&token).await.expect("type the token");
    browser
        .find(Locator::Css("#login button[type=submit]"))
        .await
        .expect("submit button")
        .click()
        .await
        .expect("log in");
    // Subscribed to the live stream, and the (empty) list loaded: what follows arrives live.
    wait_for(&browser, "#state[data-state='live']").await;
    wait_for(&browser, "#inspector:not([hidden]) #empty:not([hidden])").await;

    let earlier = webhook(&server, "/stripe", &[], r#"{"type":"charge.succeeded"}"#).await;
    // Nothing clicked yet: the detail pane opens the newest delivery by itself...
    wait_for(
        &browser,
        &format!("#detail:not([hidden])[data-id='{earlier}']"),
    )
    .await;
    let body = PR_BODY;
    let id = webhook(
        &server,
        "/github?delivery=1",
        &[
            ("x-github-event", b"push"),
            ("user-agent", b"GitHub-Hookshot/1"),
        ],
        body,
    )
    .await;

    // Both arrived live, newest first...
    let row = wait_for(&browser, &format!("#deliveries li[data-id='{id}'] button")).await;
    wait_for(
        &browser,
        &format!("#deliveries li[data-id='{id}'] + li[data-id='{earlier}']"),
    )
    .await;
    // ...and the pane followed to the newest.
    wait_for(&browser, &format!("#detail[data-id='{id}']")).await;
    // Once the user picks one, it stays open while newer deliveries arrive.
    browser
        .find(Locator::Css(&format!(
            "#deliveries li[data-id='{earlier}'] button"
        )))
        .await
        .expect("the earlier row")
        .click()
        .await
        .expect("open the earlier delivery");
    wait_for(&browser, &format!("#detail[data-id='{earlier}']")).await;
    let third = webhook(&server, "/third", &[], r#"{"n":3}"#).await;
    // The row and the choice of what is open are rendered in the same step: once the row is
    // there, an automatic switch would have marked it current.
    wait_for(
        &browser,
        &format!("#deliveries li[data-id='{third}']:first-child button:not([aria-current])"),
    )
    .await;
    wait_for(
        &browser,
        &format!("#deliveries li[data-id='{earlier}'] button[aria-current='true']"),
    )
    .await;
    let shown = browser
        .find(Locator::Css("#detail"))
        .await
        .expect("detail pane")
        .attr("data-id")
        .await
        .expect("data-id");
    assert_eq!(
        shown.as_deref(),
        Some(earlier.as_str()),
        "the user's choice is kept"
    );
    row.click().await.expect("open the delivery");
    let pretty = wait_for(
        &browser,
        &format!("#detail[data-id='{id}'] #request-body-pretty"),
    )
    .await
    .text()
    .await
    .expect("pretty body");
    assert!(
        pretty.starts_with("{\n  \"action\": \"opened\",\n  \"number\": 42,"),
        "{pretty}"
    );

    browser
        .find(Locator::Css("#replay"))
        .await
        .expect("replay button")
        .click()
        .await
        .expect("replay");
    wait_for(
        &browser,
        "#detail[data-attempts='2'] #attempts li[data-n='2']",
    )
    .await;
    // The list row follows the live attempt events.
    wait_for(
        &browser,
        &format!("#deliveries li[data-id='{id}'][data-attempts='2']"),
    )
    .await;
    // The kind of each attempt is a tag of its own, apart from its result.
    for (n, kind) in [(1, "live"), (2, "replay")] {
        let attempt = format!("#attempts li[data-n='{n}'][data-kind='{kind}']");
        let text = |css: String| {
            let browser = &browser;
            async move {
                browser
                    .find(Locator::Css(&css))
                    .await
                    .unwrap_or_else(|e| panic!("{css}: {e}"))
                    .text()
                    .await
                    .expect("text")
            }
        };
        assert_eq!(text(format!("{attempt} strong")).await, format!("#{n}"));
        assert_eq!(text(format!("{attempt} .kind")).await.to_lowercase(), kind);
        assert_eq!(text(format!("{attempt} .outcome")).await, "HTTP 201");
    }

    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    save_screenshot(&png);

    // What reached the target so far, in order: the three webhooks and the replay.
    assert_eq!(next_seen(&mut target).await.uri, "/stripe");
    let original = next_seen(&mut target).await;
    assert_eq!(next_seen(&mut target).await.uri, "/third");
    assert_eq!(
        next_seen(&mut target).await.header("x-hookrelay-attempt"),
        [b"replay"]
    );

    // Each delivery shows its type, or none.
    let types = browser
        .execute(
            "return [...document.querySelectorAll('#deliveries li')]
               .map((li) => [li.dataset.id, li.querySelector('.etype')?.textContent ?? null])",
            vec![],
        )
        .await
        .expect("the rows' types");
    assert_eq!(
        types,
        json!([[third, null], [id, "push"], [earlier, "charge.succeeded"]])
    );
    assert_eq!(fact(&browser, "Type").await, "push");
    filter_by_type(&browser, &server, &mut target, &id, &earlier).await;
    // The filter hid the open delivery, so the pane followed the newest again: open it anew.
    browser
        .find(Locator::Css(&format!(
            "#deliveries li[data-id='{id}'] button"
        )))
        .await
        .expect("the row")
        .click()
        .await
        .expect("open it");
    wait_for(&browser, &format!("#detail[data-id='{id}']")).await;
    edit_and_replay(&browser, &server, &token, &mut target, &id).await;

    browser
        .find(Locator::Css("#copy-curl"))
        .await
        .expect("curl button")
        .click()
        .await
        .expect("copy as curl");
    let command = wait_for(&browser, "#curl-box:not([hidden]) #curl")
        .await
        .prop("value")
        .await
        .expect("value")
        .expect("a command");
    assert_no_console_errors(&browser, driver, "using the page").await;
    browser.close().await.expect("session closed");
    assert!(
        command.contains(&format!("/h/{CHANNEL}/github?delivery=1")),
        "{command}"
    );

    // The command reproduces the request: run it, and compare what the target gets.
    run_to_end(Command::new("bash").args(["-c", &command]), &command).await;
    let again = next_seen(&mut target).await;
    assert_eq!(
        (again.method.as_str(), again.uri.as_str(), &again.body),
        ("POST", "/github?delivery=1", &original.body)
    );
    assert_eq!(again.body, body.as_bytes());
    let relayed = |seen: &Seen| -> Vec<(String, Vec<u8>)> {
        seen.headers
            .iter()
            .filter(|(name, _)| !name.starts_with("x-forwarded-") && name != "x-hookrelay-delivery")
            .cloned()
            .collect()
    };
    assert_eq!(relayed(&again), relayed(&original), "{command}");
}

/// The text of the detail pane's fact named `name` (`Type`, `Replay of`).
async fn fact(browser: &fantoccini::Client, name: &str) -> String {
    let value = browser
        .execute(
            "const dt = [...document.querySelectorAll('#facts dt')]
               .find((dt) => dt.textContent === arguments[0]);
             return dt ? dt.nextElementSibling.textContent : null;",
            vec![json!(name)],
        )
        .await
        .expect("the facts");
    value
        .as_str()
        .unwrap_or_else(|| panic!("no fact {name}: {value}"))
        .to_owned()
}

/// The ids of the list's rows, top to bottom.
async fn row_ids(browser: &fantoccini::Client) -> Vec<String> {
    let ids = browser
        .execute(
            "return [...document.querySelectorAll('#deliveries li')].map((li) => li.dataset.id)",
            vec![],
        )
        .await
        .expect("the rows");
    serde_json::from_value(ids).expect("a list of ids")
}

/// Types `text` into the type filter (replacing what is there) and waits until the list
/// shows the deliveries it matches.
async fn set_filter(browser: &fantoccini::Client, text: &str) {
    let input = browser
        .find(Locator::Css("#type-filter"))
        .await
        .expect("the type filter");
    input.clear().await.expect("clear the filter");
    input
        .send_keys(&format!("{text}\n"))
        .await
        .expect("type the filter");
    wait_for(
        browser,
        &format!("#deliveries[data-type='{}']", text.trim()),
    )
    .await;
}

/// The type filter: the list is fetched with `?type=` (exact, or a prefix with `*`), live
/// deliveries that do not match stay out, and a bad pattern is refused in place.
async fn filter_by_type(
    browser: &fantoccini::Client,
    server: &TestServer,
    target: &mut TestTarget,
    push: &str,
    charge: &str,
) {
    set_filter(browser, "push").await;
    assert_eq!(row_ids(browser).await, [push]);
    // Sent in this order, and the stream keeps it: once the second is listed, the first
    // has been seen and left out.
    let issues = webhook(server, "/issues", &[("x-github-event", b"issues")], "{}").await;
    let again = webhook(server, "/again", &[("x-github-event", b"push")], "{}").await;
    wait_for(browser, &format!("#deliveries li[data-id='{again}']")).await;
    assert_eq!(row_ids(browser).await, [again.as_str(), push]);
    assert_eq!(next_seen(target).await.uri, "/issues");
    assert_eq!(next_seen(target).await.uri, "/again");
    let url = browser.current_url().await.expect("the page's URL");
    assert_eq!(url.query(), Some("type=push"), "the filter is in the URL");

    set_filter(browser, "charge.*").await;
    assert_eq!(row_ids(browser).await, [charge]);
    set_filter(browser, "nothing").await;
    wait_for(browser, "#empty-filtered:not([hidden])").await;
    assert!(row_ids(browser).await.is_empty());

    let input = browser
        .find(Locator::Css("#type-filter"))
        .await
        .expect("the type filter");
    input.clear().await.expect("clear the filter");
    input.send_keys("pull*request\n").await.expect("type");
    let error = wait_for(browser, "#type-filter[aria-invalid='true'] + #filter-error")
        .await
        .text()
        .await
        .expect("the error");
    assert!(error.contains("* may only end a pattern"), "{error}");
    assert_eq!(
        browser
            .find(Locator::Css("#deliveries"))
            .await
            .expect("the list")
            .attr("data-type")
            .await
            .expect("data-type")
            .as_deref(),
        Some("nothing"),
        "a refused filter leaves the list as it was"
    );

    set_filter(browser, "").await;
    let all = row_ids(browser).await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[..2], [again.as_str(), issues.as_str()]);
}

/// Edit and replay of the open delivery `id`: the editor opens on the stored request, the
/// edited one reaches the target and is a new event naming the original, which stays as it
/// was; its link opens the original again.
async fn edit_and_replay(
    browser: &fantoccini::Client,
    server: &TestServer,
    token: &str,
    target: &mut TestTarget,
    id: &str,
) {
    browser
        .find(Locator::Css("#edit-replay"))
        .await
        .expect("edit button")
        .click()
        .await
        .expect("open the editor");
    let headers_box = wait_for(
        browser,
        &format!("#editor[data-id='{id}']:not([hidden]) #edit-headers"),
    )
    .await;
    let stored = headers_box
        .prop("value")
        .await
        .expect("value")
        .expect("the headers");
    for line in ["x-github-event: push", "user-agent: GitHub-Hookshot/1"] {
        assert!(stored.lines().any(|l| l == line), "{line} in {stored}");
    }
    let body_box = browser
        .find(Locator::Css("#edit-body"))
        .await
        .expect("the body box");
    let stored_body = body_box.prop("value").await.expect("value");
    assert_eq!(stored_body.as_deref(), Some(PR_BODY));

    let edited_headers = stored.replace("GitHub-Hookshot/1", "Edited/2") + "\nx-edited: yes";
    headers_box.clear().await.expect("clear");
    headers_box
        .send_keys(&edited_headers)
        .await
        .expect("type the headers");
    let edited_body = r#"{"action":"edited","number":43}"#;
    body_box.clear().await.expect("clear");
    body_box
        .send_keys(edited_body)
        .await
        .expect("type the body");
    browser
        .find(Locator::Css("#edit-send"))
        .await
        .expect("send button")
        .click()
        .await
        .expect("send the edit");

    let seen = next_seen(target).await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/github?delivery=1")
    );
    assert_eq!(seen.body, edited_body);
    let length = edited_body.len().to_string();
    assert_eq!(seen.header("content-length"), [length.as_bytes()]);
    assert_eq!(seen.header("user-agent"), [b"Edited/2"]);
    assert_eq!(seen.header("x-edited"), [b"yes"]);
    assert_eq!(seen.header("x-github-event"), [b"push"]);
    assert_eq!(seen.header("x-hookrelay-attempt"), [b"replay"]);
    let new = std::str::from_utf8(seen.header("x-hookrelay-delivery")[0])
        .expect("an ASCII id")
        .to_owned();
    assert_ne!(new, id, "a new event");

    // The page opens the new event, which names the original.
    wait_for(
        browser,
        &format!("#detail[data-id='{new}'][data-replay-of='{id}']"),
    )
    .await;
    assert_eq!(fact(browser, "Replay of").await, id);
    wait_for(
        browser,
        &format!("#deliveries li:first-child[data-id='{new}'] button[aria-current='true'] .kind"),
    )
    .await;
    let state = browser
        .find(Locator::Css("#action-state"))
        .await
        .expect("action state")
        .text()
        .await
        .expect("text");
    assert_eq!(state, "Replayed as a new event: HTTP 201");

    let api = format!("{}/api/channels/{CHANNEL}/events", server.url());
    let copy = get_with(&format!("{api}/{new}"), Some(token)).await.json();
    assert_eq!(copy["replay_of"], id);
    assert_eq!(copy["event_type"], "push");
    assert_eq!(copy["body"], edited_body);
    assert_eq!(copy["attempts"].as_array().map(Vec::len), Some(1));
    let stored_length = (copy["headers"].as_array().expect("headers").iter())
        .find(|h| h["name"] == "content-length")
        .map(|h| h["value"].clone());
    assert_eq!(stored_length, Some(json!(length)), "{copy}");
    let original = get_with(&format!("{api}/{id}"), Some(token)).await.json();
    assert!(original["replay_of"].is_null());
    assert_eq!(original["body"], PR_BODY);
    assert_eq!(original["attempts"].as_array().map(Vec::len), Some(2));
    let agents: Vec<&Value> = (original["headers"].as_array().expect("headers").iter())
        .filter(|h| h["name"] == "user-agent" || h["name"] == "x-edited")
        .collect();
    assert_eq!(
        agents,
        [&json!({"name": "user-agent", "value": "GitHub-Hookshot/1"})]
    );

    // Its link opens the original again.
    browser
        .find(Locator::Css("#replay-of"))
        .await
        .expect("the link")
        .click()
        .await
        .expect("follow it");
    wait_for(
        browser,
        &format!("#detail[data-id='{id}'][data-replay-of='']"),
    )
    .await;
}

/// An open channel (its API needs no token) and an agent that takes only `push`: the page
/// opens without a login, an `issues` webhook shows as unrouted, and Replay delivers it.
#[tokio::test]
async fn the_inspector_of_an_open_channel_needs_no_login_and_marks_unrouted_deliveries() {
    let driver = Chromedriver::start().await;
    tokio::time::timeout(BROWSER_DEADLINE, unrouted_in_chromium(&driver))
        .await
        .expect("the browser test finishes within its deadline");
}

async fn unrouted_in_chromium(driver: &Chromedriver) {
    let server = start_server(relay_server::Config::default()).await;
    let mut target = start_target().await;
    let mut config = pinned_agent(&server.url(), "open-inspected", &target.url);
    config.routes.events = Some(protocol::Subscription::parse(["push"]).expect("valid"));
    let _agent = start_agent(config).await;
    let browser = chromium(driver).await;
    browser
        .goto(&format!("{}/c/open-inspected", server.url()))
        .await
        .expect("page loads");
    wait_for(&browser, "#state[data-state='live']").await;
    wait_for(&browser, "#login[hidden]").await;
    wait_for_script(&browser, "return document.readyState === 'complete'").await;
    assert_no_console_errors(&browser, driver, "loading the page").await;

    let answer = send(
        &client(),
        "POST",
        &format!("{}/h/open-inspected/gh", server.url()),
        &[("x-github-event", b"issues")],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.json()["status"], "unrouted");
    let id = answer.delivery().expect("delivery id");
    let badge = wait_for(
        &browser,
        &format!("#deliveries li[data-id='{id}'][data-status='unrouted'] .badge.unrouted"),
    )
    .await;
    assert_eq!(badge.text().await.expect("text"), "unrouted");
    let tooltip = badge.attr("title").await.expect("title");
    assert!(
        tooltip.is_some_and(|t| t.contains("No connected agent takes this event type")),
        "the badge says what unrouted means"
    );
    wait_for(&browser, &format!("#detail[data-id='{id}']")).await;
    assert_eq!(fact(&browser, "Status").await, "unrouted");
    assert_eq!(fact(&browser, "Type").await, "issues");

    // Replay delivers it to any agent, even one that does not take its type.
    browser
        .find(Locator::Css("#replay"))
        .await
        .expect("replay button")
        .click()
        .await
        .expect("replay");
    let seen = next_seen(&mut target).await;
    assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()]);
    assert_eq!(seen.header("x-hookrelay-event-type"), [b"issues"]);
    wait_for(
        &browser,
        &format!("#deliveries li[data-id='{id}'][data-status='delivered']"),
    )
    .await;
    assert_no_console_errors(&browser, driver, "replaying").await;
    browser.close().await.expect("session closed");
}

/// Runs `command` (output discarded) and waits for it to succeed, for at most [`DEADLINE`],
/// without blocking the runtime that serves its requests.
async fn run_to_end(command: &mut Command, what: &str) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("command starts");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after the deadline: {what}");
        }
        tokio::time::sleep(POLL).await;
    };
    assert!(status.success(), "{status}: {what}");
}

/// Sends a JSON webhook to the test channel at `path`; answers its delivery id.
async fn webhook(
    server: &TestServer,
    path: &str,
    extra: &[(&str, &[u8])],
    body: &'static str,
) -> String {
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    headers.extend_from_slice(extra);
    let answer = send(
        &client(),
        "POST",
        &format!("{}/h/{CHANNEL}{path}", server.url()),
        &headers,
        body,
    )
    .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    answer.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ASCII id")
        .to_owned()
}

/// Keeps the screenshot in the target directory; with `HOOKRELAY_UPDATE_SCREENSHOT=1`, also
/// as `docs/inspector.png`, the README's picture (ids and times change on every run, so
/// writing it always would leave the checkout modified after each test run).
fn save_screenshot(png: &[u8]) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspector.png");
    std::fs::write(&tmp, png).expect("write the screenshot");
    if std::env::var_os("HOOKRELAY_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/inspector.png");
        std::fs::write(docs, png).expect("write docs/inspector.png");
    }
}

/// `relay-client --inspect`: the same page on the agent's side, its API calls passed to the
/// server with the agent's token, so the local page needs no login.
#[tokio::test]
async fn the_agent_serves_the_inspector_locally_with_its_own_token() {
    let (server, token) = server_with_channel().await;
    let mut target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse(CHANNEL).ok();
    config.token = Some(token);
    let agent = start_agent(config.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let local = format!("http://{}", listener.local_addr().expect("bound"));
    let api = config
        .api(protocol::ChannelId::parse(&agent.channel).expect("valid"))
        .expect("api config");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(relay_client::inspect::serve(listener, api, stop.clone()));

    let root = send(&client(), "GET", &format!("{local}/"), &[], "").await;
    assert_eq!(root.status, 302);
    assert_eq!(root.headers["location"], format!("/c/{CHANNEL}"));
    let page = send(&client(), "GET", &format!("{local}/c/{CHANNEL}"), &[], "").await;
    assert_eq!(page.status, 200);
    assert!(
        std::str::from_utf8(&page.body)
            .is_ok_and(|page| page.contains(r#"<meta name="hookrelay-token" content="none">"#)),
        "the page asks for no token here"
    );
    let icon = send(
        &client(),
        "GET",
        &format!("{local}/c/assets/favicon.svg"),
        &[],
        "",
    )
    .await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.headers["content-type"], "image/svg+xml");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .is_ok_and(|csp| csp.contains("default-src 'none'"))
    );
    assert_eq!(
        send(&client(), "GET", &format!("{local}/c/other"), &[], "")
            .await
            .status,
        404
    );
    let info = send(
        &client(),
        "GET",
        &format!("{local}/api/channels/{CHANNEL}"),
        &[],
        "",
    )
    .await;
    assert_eq!(info.status, 200, "no token needed locally: {:?}", info.body);
    assert_eq!(info.json()["url"], format!("{}/h/{CHANNEL}", server.url()));
    let other = send(
        &client(),
        "GET",
        &format!("{local}/api/channels/other/events"),
        &[],
        "",
    )
    .await;
    assert_eq!(other.status, 404, "only the agent's channel");

    let (status, live) = open_live_at(&local, CHANNEL, None).await;
    assert_eq!(status, 200);
    let mut live = live.expect("stream");
    let sent = webhook(&server, "/local?x=1", &[], r#"{"hello":"inspector"}"#).await;
    next_seen(&mut target).await;
    let (name, data) = live.next().await.expect("an event");
    assert_eq!(name, "received");
    assert_eq!(data["id"], sent.as_str());
    let events = send(
        &client(),
        "GET",
        &format!("{local}/api/channels/{CHANNEL}/events?limit=5"),
        &[],
        "",
    )
    .await;
    assert_eq!(events.json()["events"][0]["id"], sent.as_str());
    let replay = send(
        &client(),
        "POST",
        &format!("{local}/api/channels/{CHANNEL}/events/{sent}/replay"),
        &[],
        "",
    )
    .await;
    assert_eq!(replay.status, 200, "{:?}", replay.body);
    assert_eq!(replay.json()["attempt"]["kind"], "replay");
    next_seen(&mut target).await;
    // An edited replay's body (the page's editor) is passed on too.
    let edited = send(
        &client(),
        "POST",
        &format!("{local}/api/channels/{CHANNEL}/events/{sent}/replay"),
        &[("content-type", b"application/json")],
        r#"{"body":"edited here"}"#,
    )
    .await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    assert_eq!(edited.json()["replay_of"], sent.as_str());
    assert_eq!(next_seen(&mut target).await.body, "edited here");
    stop.cancel();
}
