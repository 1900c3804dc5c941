// hookrelay live inspector. Everything shown here came from a stranger's webhook: the DOM is
// built with textContent and attributes only, never from HTML strings.
"use strict";

(() => {
  const channel = decodeURIComponent(location.pathname.split("/")[2] || "");
  const api = "/api/channels/" + encodeURIComponent(channel);
  const tokenKey = "hookrelay.token." + channel;
  // Where senders send this channel's webhooks; the server says (the page may be served
  // elsewhere, e.g. by the agent's --inspect).
  let webhookBase = location.origin + "/h/" + channel;
  const LIST_LIMIT = 50;
  const MAX_ROWS = 200;
  const RETRY_MS = 2000;
  // How long typing in the type filter pauses before the list is fetched again.
  const FILTER_DELAY_MS = 300;
  // Longest event type, in bytes, as the server's (protocol's MAX_EVENT_TYPE_LEN).
  const MAX_EVENT_TYPE_LEN = 200;
  // Headers curl sets from the command itself, or that belong to one connection.
  const NOT_REPLAYED = new Set(["host", "content-length", "transfer-encoding", "connection",
    "keep-alive", "te", "trailer", "upgrade", "expect"]);

  const $ = (id) => document.getElementById(id);
  // Whether this channel's API needs a token, as the server that served the page says (the
  // agent's --inspect adds its own): asking the API would put a 401 in the console.
  const tokenMeta = document.querySelector('meta[name="hookrelay-token"]');
  const tokenNeeded = !tokenMeta || tokenMeta.content !== "none";
  let token = sessionStorage.getItem(tokenKey);
  let live = null; // AbortController of the current stream
  let retry = null;
  const rows = new Map(); // id -> { li, summary }
  let openId = null;
  let openEvent = null;
  // Until the user picks a delivery (or acts on one), the detail pane follows the newest.
  let pinned = false;
  // The list's type filter ({ text, name, prefix }), or null for every delivery; the list
  // is fetched with ?type= and the live stream's new deliveries are matched the same way.
  let typeFilter = null;
  let filterTimer = null;
  // Counts list loads, so an answer for a filter since replaced is dropped.
  let listLoads = 0;
  // The event the editor was opened on, or null.
  let editing = null;
  // What each kind of attempt means, for the tag's tooltip.
  const KINDS = {
    live: "Delivered while the sender waited",
    queued: "Delivered from the queue: stored first (no agent, paced, or a retry)",
    replay: "Sent again with Replay",
  };
  const UNROUTED = "No connected agent takes this event type; Replay delivers it to any agent";

  class Unauthorized extends Error {}

  // Builds an element; children are nodes or strings (appended as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    e.append(...children);
    return e;
  }

  // The status line; `key` (a data-state attribute) names it for tests and styles.
  function setState(text, key) {
    $("state").textContent = text;
    $("state").dataset.state = key || "";
  }

  async function call(path, options) {
    const headers = { ...(options && options.headers) };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(api + path, { cache: "no-store", ...options, headers });
    if (res.status === 401) throw new Unauthorized();
    return res;
  }

  async function callJson(path, options) {
    const res = await call(path, options);
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || "HTTP " + res.status);
    return body;
  }

  // ---- session ----

  function showLogin(error) {
    stopLive();
    $("inspector").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = error || "";
    setState("Locked");
    $("token").focus();
  }

  function refused() {
    const had = token;
    sessionStorage.removeItem(tokenKey);
    token = null;
    showLogin(had ? "That token was refused." : "");
  }

  function stopLive() {
    clearTimeout(retry);
    if (live) live.abort();
    live = null;
  }

  function retryLater() {
    clearTimeout(retry);
    retry = setTimeout(start, RETRY_MS);
  }

  // Subscribes first, then loads the list: a delivery that arrives in between is on the
  // stream, and rows are keyed by id, so nothing is missed or shown twice.
  async function start() {
    stopLive();
    const ctrl = new AbortController();
    live = ctrl;
    setState("Connecting…");
    let res;
    try {
      res = await call("/live", { signal: ctrl.signal });
    } catch (e) {
      if (e instanceof Unauthorized) return refused();
      if (ctrl.signal.aborted) return;
      setState("Cannot reach the server; retrying…");
      return retryLater();
    }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      setState(body.error || "HTTP " + res.status);
      if (res.status === 429 || res.status >= 500) retryLater();
      return;
    }
    $("login").hidden = true;
    $("inspector").hidden = false;
    $("logout").hidden = !token;
    try {
      const info = await callJson("");
      if (typeof info.url === "string") {
        webhookBase = info.url;
        $("webhook-url").textContent = webhookBase + "/…";
      }
    } catch {
      // Keep the page's own origin.
    }
    try {
      await loadList();
      setState("Live: deliveries appear as they arrive", "live");
      await readEvents(res.body, onEvent);
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof Unauthorized) return refused();
    }
    if (live !== ctrl) return;
    setState("Disconnected; reconnecting…");
    retryLater();
  }

  // ---- server-sent events over fetch (EventSource cannot send Authorization) ----

  async function readEvents(body, dispatch) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let name = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      for (;;) {
        const nl = buf.search(/\r\n|\r|\n/);
        // A lone CR at the end may be the first half of a CRLF still on its way.
        if (nl < 0 || (nl === buf.length - 1 && buf[nl] === "\r")) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(buf.startsWith("\r\n", nl) ? nl + 2 : nl + 1);
        if (line === "") {
          if (data.length) dispatch(name || "message", data.join("\n"));
          name = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
      }
    }
  }

  function onEvent(name, data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (name === "received") {
      // The stream carries every delivery of the channel; the list shows the filter's.
      if (!typeMatches(typeFilter, msg.event_type)) return;
      upsert(msg, true);
      if (!pinned) openDelivery(msg.id, false);
    } else if (name === "attempt") {
      const row = rows.get(msg.id);
      if (row) {
        const s = row.summary;
        s.status = msg.status;
        s.attempts = Math.max(s.attempts, msg.attempt.n);
        if (msg.attempt.status != null) s.response_status = msg.attempt.status;
        renderRow(row);
      }
      if (msg.id === openId) openDelivery(msg.id, false);
    } else if (name === "reload") {
      loadList().catch(() => {});
    }
  }

  // ---- the list ----

  async function loadList() {
    const load = ++listLoads;
    const type = typeFilter ? "&type=" + encodeURIComponent(typeFilter.text) : "";
    const page = await callJson("/events?limit=" + LIST_LIMIT + type);
    if (load !== listLoads) return;
    rows.clear();
    $("deliveries").replaceChildren();
    // Which filter the rows are for, for tests and styles.
    $("deliveries").dataset.type = typeFilter ? typeFilter.text : "";
    for (const summary of page.events) upsert(summary, false);
    updateEmpty();
    if (!pinned) {
      const newest = $("deliveries").firstElementChild;
      if (newest) openDelivery(newest.dataset.id, false);
    } else if (openId && !rows.has(openId)) {
      pinned = false;
    }
  }

  function upsert(summary, newest) {
    let row = rows.get(summary.id);
    if (row) {
      row.summary = summary;
    } else {
      const li = el("li");
      li.dataset.id = summary.id;
      const button = el("button", { type: "button", class: "row" });
      button.addEventListener("click", () => {
        pinned = true;
        openDelivery(summary.id, true);
      });
      li.append(button);
      row = { li, button, summary };
      rows.set(summary.id, row);
      const list = $("deliveries");
      if (newest) list.prepend(li); else list.append(li);
      while (list.children.length > MAX_ROWS) {
        rows.delete(list.lastElementChild.dataset.id);
        list.lastElementChild.remove();
      }
    }
    renderRow(row);
    updateEmpty();
  }

  function updateEmpty() {
    $("empty").hidden = rows.size > 0 || typeFilter != null;
    $("empty-filtered").hidden = rows.size > 0 || typeFilter == null;
    $("empty-type").textContent = typeFilter ? typeFilter.text : "";
  }

  // ---- the type filter ----

  // Reads a filter as the server reads ?type= (protocol's TypePattern): an exact type, or
  // with a trailing * every type that starts with what comes before it. Answers
  // { pattern } (null for no filter) or { error }.
  function parsePattern(input) {
    const text = input.trim();
    if (!text) return { pattern: null };
    const prefix = text.endsWith("*");
    const name = prefix ? text.slice(0, -1) : text;
    if (name.includes("*")) return { error: "* may only end a pattern (as in payment_intent.*)" };
    if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) {
      return { error: "an event type cannot contain control characters" };
    }
    if (new TextEncoder().encode(name).length > MAX_EVENT_TYPE_LEN) {
      return { error: "an event type has at most " + MAX_EVENT_TYPE_LEN + " bytes" };
    }
    return { pattern: { text, name, prefix } };
  }

  // Whether a delivery of type `type` (null: it has none) passes `pattern`; an untyped one
  // passes no pattern, as on the server.
  function typeMatches(pattern, type) {
    if (!pattern) return true;
    if (type == null) return false;
    return pattern.prefix ? type.startsWith(pattern.name) : type === pattern.name;
  }

  // Applies what the filter box says: the list is fetched again for it, and the page's URL
  // keeps it (?type=), so a reload or a shared link shows the same list.
  function applyFilter() {
    clearTimeout(filterTimer);
    const input = $("type-filter");
    const { pattern, error } = parsePattern(input.value);
    $("filter-error").textContent = error ? "Not a type filter: " + error : "";
    input.setAttribute("aria-invalid", error ? "true" : "false");
    if (error) return;
    if ((pattern && pattern.text) === (typeFilter && typeFilter.text)) return;
    typeFilter = pattern;
    const query = pattern ? "?type=" + encodeURIComponent(pattern.text) : "";
    history.replaceState(null, "", location.pathname + query);
    if (!live) return;
    loadList().catch((e) => {
      if (e instanceof Unauthorized) refused();
      else $("filter-error").textContent = "Could not load the list: " + e.message;
    });
  }

  function statusText(s) {
    return s.response_status != null ? s.response_status + " " + s.status : s.status;
  }

  function statusClass(s) {
    if (s.status === "failed" || s.status === "rejected") return "bad";
    if (s.status === "unrouted") return "unrouted";
    if (s.response_status != null) return s.response_status < 400 ? "ok" : "bad";
    return "pending";
  }

  function target(s) {
    return (s.path || "/") + (s.query != null ? "?" + s.query : "");
  }

  // The status badge, with what `unrouted` means as its tooltip.
  function statusBadge(s) {
    const badge = el("span", { class: "badge " + statusClass(s), text: statusText(s) });
    if (s.status === "unrouted") badge.title = UNROUTED;
    return badge;
  }

  function renderRow(row) {
    const s = row.summary;
    row.li.dataset.status = s.status;
    row.li.dataset.attempts = s.attempts;
    row.li.dataset.type = s.event_type != null ? s.event_type : "";
    const meta = el("span", { class: "meta" },
      el("time", { datetime: s.received_at, text: shortTime(s.received_at) }));
    if (s.event_type != null) {
      meta.append(el("span", { class: "etype", title: "Event type", text: s.event_type }));
    }
    if (s.replay_of != null) {
      meta.append(el("span", { class: "kind", title: "An edited replay of " + s.replay_of,
        text: "edited" }));
    }
    row.button.replaceChildren(
      el("span", { class: "method", text: s.method }),
      el("span", { class: "path", text: target(s) }),
      statusBadge(s),
      meta);
    row.button.setAttribute("aria-label", s.method + " " + target(s) +
      (s.event_type != null ? ", type " + s.event_type : "") + ", " + statusText(s) +
      (s.replay_of != null ? ", an edited replay" : "") + ", received " + s.received_at);
    if (s.id === openId) row.button.setAttribute("aria-current", "true");
    else row.button.removeAttribute("aria-current");
  }

  function shortTime(rfc3339) {
    const d = new Date(rfc3339);
    return isNaN(d) ? rfc3339 : d.toLocaleTimeString();
  }

  // ---- one delivery ----

  async function openDelivery(id, focus) {
    if (id !== openId) {
      $("curl-box").hidden = true;
      closeEditor();
      $("action-state").textContent = "";
    }
    openId = id;
    for (const row of rows.values()) renderRow(row);
    let event;
    try {
      event = await callJson("/events/" + encodeURIComponent(id));
    } catch (e) {
      if (e instanceof Unauthorized) return refused();
      $("action-state").textContent = "Could not load it: " + e.message;
      return;
    }
    if (id !== openId) return;
    openEvent = event;
    renderDetail(event);
    if (focus) $("detail-title").focus();
  }

  function renderDetail(e) {
    const detail = $("detail");
    detail.hidden = false;
    detail.dataset.id = e.id;
    detail.dataset.attempts = e.attempts.length;
    $("detail-title").textContent = e.method + " " + target(e);
    const facts = [
      ["Delivery", e.id],
      ["Received", e.received_at],
      ["From", e.source || "unknown"],
      ["Type", e.event_type != null ? e.event_type : "none"],
      ["Status", e.status === "unrouted"
        ? el("span", { title: UNROUTED, text: statusText(e) }) : statusText(e)],
      ["Body", e.body_bytes + " bytes"],
    ];
    if (e.replay_of != null) facts.push(["Replay of", replayOfLink(e.replay_of)]);
    if (e.next_attempt_at) facts.push(["Next attempt", e.next_attempt_at]);
    $("facts").replaceChildren(...facts.flatMap(([k, v]) =>
      [el("dt", { text: k }), el("dd", {}, v instanceof Node ? v : String(v))]));
    detail.dataset.replayOf = e.replay_of != null ? e.replay_of : "";
    renderHeaders($("request-headers"), e.headers, "Request headers");
    renderBody($("request-body"), e, "request-body");
    $("replay").disabled = e.status === "rejected";
    $("edit-replay").disabled = e.status === "rejected";
    $("attempts").replaceChildren(...e.attempts.map((a, i) =>
      renderAttempt(a, i === e.attempts.length - 1)));
    if (!e.attempts.length) {
      $("attempts").append(el("li", { class: "none", text: "None yet." }));
    }
  }

  // A link that opens the event `id` (the original of an edited replay) in the detail pane;
  // it need not be in the list.
  function replayOfLink(id) {
    const link = el("a", { href: "#", id: "replay-of", "data-id": id, text: id,
      title: "Open the event this one is an edited replay of" });
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      pinned = true;
      openDelivery(id, true);
    });
    return link;
  }

  function headerValue(h) {
    return h.value != null ? h.value : "(not UTF-8, base64) " + h.value_base64;
  }

  function renderHeaders(table, headers, label) {
    table.setAttribute("aria-label", label);
    table.replaceChildren(...headers.map((h) =>
      el("tr", {}, el("th", { scope: "row", text: h.name }), el("td", { text: headerValue(h) }))));
    if (!headers.length) table.append(el("tr", {}, el("td", { text: "(none)" })));
  }

  // The body pretty-printed when it is JSON, with the raw text one click away.
  function renderBody(box, holder, idPrefix) {
    const { body, body_encoding: encoding, body_bytes: bytes } = holder;
    if (!bytes) {
      box.replaceChildren(el("p", { class: "none", text: "(empty)" }));
      return;
    }
    if (encoding === "base64") {
      box.replaceChildren(
        el("p", { text: "Not UTF-8 text: " + bytes + " bytes, shown as base64." }),
        el("pre", { class: "raw", id: idPrefix + "-raw", text: body }));
      return;
    }
    let pretty = null;
    try { pretty = JSON.stringify(JSON.parse(body), null, 2); } catch { /* not JSON */ }
    if (pretty == null) {
      box.replaceChildren(el("pre", { class: "raw", id: idPrefix + "-raw", text: body }));
      return;
    }
    box.replaceChildren(
      el("pre", { class: "json", id: idPrefix + "-pretty", "aria-label": "JSON, formatted",
        text: pretty }),
      el("details", {}, el("summary", { text: "Raw" }),
        el("pre", { class: "raw", id: idPrefix + "-raw", text: body })));
  }

  // The attempt's number, a tag saying what kind of attempt it was, then its result, so the
  // kind ("queued") does not read as part of the status.
  function renderAttempt(a, last) {
    const outcome = a.status != null ? "HTTP " + a.status : "no answer";
    const li = el("li");
    li.dataset.n = a.n;
    li.dataset.kind = a.kind;
    li.append(el("p", { class: "attempt-head" },
      el("strong", { text: "#" + a.n }), " ",
      el("span", { class: "kind", title: KINDS[a.kind] || "", text: a.kind }), " ",
      el("span", { class: "badge outcome " +
        (a.status != null && a.status < 400 ? "ok" : "bad"), text: outcome }),
      " in " + a.duration_ms + " ms, started " + a.started_at +
        (a.agent ? " by agent " + a.agent : "")));
    if (a.error) li.append(el("p", { class: "error", text: a.error }));
    const more = el("details", {}, el("summary", { text: "Response" }));
    if (last) more.open = true;
    const headers = el("table", { class: "headers" });
    renderHeaders(headers, a.headers, "Response headers of attempt " + a.n);
    const body = el("div");
    renderBody(body, a, "attempt-" + a.n + "-body");
    more.append(el("h4", { text: "Headers" }), headers, el("h4", { text: "Body" }), body);
    li.append(more);
    return li;
  }

  async function replay() {
    if (!openEvent) return;
    pinned = true;
    const id = openEvent.id;
    const button = $("replay");
    button.disabled = true;
    $("action-state").textContent = "Replaying…";
    try {
      const res = await callJson("/events/" + encodeURIComponent(id) + "/replay",
        { method: "POST" });
      const a = res.attempt;
      $("action-state").textContent = "Replayed: " +
        (a.status != null ? "HTTP " + a.status : a.error || "no answer");
      if (id === openId) await openDelivery(id, false);
    } catch (e) {
      if (e instanceof Unauthorized) return refused();
      $("action-state").textContent = "Replay failed: " + e.message;
    } finally {
      button.disabled = false;
    }
  }

  // ---- edit and replay ----

  // Opens the editor on the open delivery: its headers one `Name: value` per line and its
  // body as text. A body that is not UTF-8 text cannot be shown faithfully in a text box, so
  // it is not offered for editing: it is sent as stored. Header values that are not UTF-8
  // are left out of the box the same way, and kept as stored.
  function openEditor() {
    if (!openEvent) return;
    pinned = true;
    const e = openEvent;
    const binaryHeaders = e.headers.filter((h) => h.value == null);
    editing = { event: e, binaryHeaders };
    $("edit-headers").value = e.headers.filter((h) => h.value != null)
      .map((h) => h.name + ": " + h.value).join("\n");
    $("edit-headers-kept").textContent = binaryHeaders.length
      ? "Not UTF-8 text, so kept as stored unless a line names them: " +
        binaryHeaders.map((h) => h.name).join(", ") + "."
      : "";
    const body = $("edit-body");
    if (e.body_encoding === "base64") {
      body.value = "";
      body.hidden = true;
      $("edit-body-note").textContent = "The body is not UTF-8 text (" + e.body_bytes +
        " bytes): it is sent as stored, byte for byte. Only the headers can be edited here.";
    } else {
      body.value = e.body;
      body.hidden = false;
      $("edit-body-note").textContent = usesCrlf(e.body)
        ? "Its line breaks are CRLF, and an edited body is sent with CRLF too." : "";
    }
    $("edit-error").textContent = "";
    $("curl-box").hidden = true;
    $("editor").hidden = false;
    $("editor").dataset.id = e.id;
    $("edit-headers").focus();
  }

  function closeEditor() {
    editing = null;
    $("editor").hidden = true;
    $("edit-error").textContent = "";
  }

  // Whether every line break of `text` is CRLF (a text box gives them back as LF).
  function usesCrlf(text) {
    return text.includes("\r\n") && !/[^\r]\n|^\n|\r(?!\n)/.test(text);
  }

  // The header box's lines as headers; throws, naming the line, on one that is not
  // `Name: value`. Empty lines are skipped; a value may be empty.
  function parseHeaderLines(text) {
    const headers = [];
    text.split("\n").forEach((line, i) => {
      if (!line.trim()) return;
      const colon = line.indexOf(":");
      const where = "Header line " + (i + 1) + " (" + JSON.stringify(line) + ")";
      if (colon < 0) throw new Error(where + " has no colon: write Name: value");
      const name = line.slice(0, colon).trim();
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
        throw new Error(where + ": " + JSON.stringify(name) + " is not a header name");
      }
      headers.push({ name, value: line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "") });
    });
    return headers;
  }

  const sameHeaders = (a, b) => a.length === b.length && a.every((h, i) =>
    h.name.toLowerCase() === b[i].name.toLowerCase() && h.value === b[i].value &&
    h.value_base64 === b[i].value_base64);

  // What the editor asks for, as the replay API's edit: `body` only when it was changed,
  // `headers` (the whole list) only when they were. Content-Length, if the request has one,
  // says the length of the body sent.
  function replayEdit() {
    const e = editing.event;
    const edit = {};
    let length = e.body_bytes;
    if (e.body_encoding !== "base64") {
      const text = $("edit-body").value;
      if (text !== e.body.replace(/\r\n?/g, "\n")) {
        edit.body = usesCrlf(e.body) ? text.replace(/\n/g, "\r\n") : text;
        edit.body_encoding = "utf8";
        length = new TextEncoder().encode(edit.body).length;
      }
    }
    const typed = parseHeaderLines($("edit-headers").value);
    let headers;
    if (sameHeaders(typed, e.headers.filter((h) => h.value != null))) {
      // The box unchanged: the stored list, binary values where they were.
      headers = e.headers;
    } else {
      const named = new Set(typed.map((h) => h.name.toLowerCase()));
      headers = typed.concat(
        editing.binaryHeaders.filter((h) => !named.has(h.name.toLowerCase())));
    }
    let lengthSeen = false;
    const fixed = headers.filter((h) => {
      if (h.name.toLowerCase() !== "content-length") return true;
      if (lengthSeen) return false;
      lengthSeen = true;
      return true;
    }).map((h) => h.name.toLowerCase() === "content-length"
      ? { name: h.name, value: String(length) } : h);
    if (!sameHeaders(fixed, e.headers)) edit.headers = fixed;
    return edit;
  }

  async function sendEdited(ev) {
    ev.preventDefault();
    if (!editing) return;
    const id = editing.event.id;
    let edit;
    try {
      edit = replayEdit();
    } catch (e) {
      $("edit-error").textContent = e.message;
      return;
    }
    const button = $("edit-send");
    button.disabled = true;
    $("action-state").textContent = "Replaying…";
    try {
      const res = await callJson("/events/" + encodeURIComponent(id) + "/replay", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(edit),
      });
      const a = res.attempt;
      const outcome = a.status != null ? "HTTP " + a.status : a.error || "no answer";
      closeEditor();
      if (res.replay_of != null) {
        // The new event, whether or not the list's filter shows it.
        await openDelivery(res.id, true);
        $("action-state").textContent = "Replayed as a new event: " + outcome;
      } else {
        $("action-state").textContent = "Nothing was edited, so it was replayed as stored: " +
          outcome;
        if (id === openId) await openDelivery(id, false);
      }
    } catch (e) {
      if (e instanceof Unauthorized) return refused();
      $("edit-error").textContent = "Replay failed: " + e.message;
      $("action-state").textContent = "";
    } finally {
      button.disabled = false;
    }
  }

  // ---- copy as curl ----

  const shellQuote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";

  // Bash's $'...' quoting, every byte that is not plain printable ASCII as \xHH.
  function bytesQuote(bytes) {
    let out = "$'";
    for (const b of bytes) {
      const c = String.fromCharCode(b);
      out += b >= 0x20 && b < 0x7f && c !== "'" && c !== "\\"
        ? c : "\\x" + b.toString(16).padStart(2, "0");
    }
    return out + "'";
  }

  function base64Bytes(b64) {
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  }

  function bytesBase64(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }

  // The command that sends this webhook again, as it was received: method, path, query,
  // headers in order (curl's own User-Agent, Accept and form Content-Type suppressed when the
  // original had none) and the body byte for byte.
  function curlCommand(e) {
    const url = webhookBase + (e.path || "") +
      (e.query != null ? "?" + e.query : "");
    const args = ["curl", shellQuote(url)];
    if (/[[\]{}]/.test(url)) args.push("--globoff");
    args.push(e.method === "HEAD" ? "--head" : "-X " + shellQuote(e.method));
    const present = new Set();
    for (const h of e.headers) {
      const name = h.name.toLowerCase();
      present.add(name);
      if (NOT_REPLAYED.has(name)) continue;
      if (h.value != null) {
        args.push("-H " + shellQuote(h.value === "" ? h.name + ";" : h.name + ": " + h.value));
      } else {
        const line = new TextEncoder().encode(h.name + ": ");
        const value = base64Bytes(h.value_base64);
        args.push("-H " + bytesQuote([...line, ...value]));
      }
    }
    for (const name of ["User-Agent", "Accept"]) {
      if (!present.has(name.toLowerCase())) args.push("-H " + shellQuote(name + ":"));
    }
    let prelude = "";
    if (e.body_bytes > 0) {
      if (!present.has("content-type")) args.push("-H " + shellQuote("Content-Type:"));
      const binary = e.body_encoding === "base64" || e.body.includes("\0");
      if (binary) {
        const b64 = e.body_encoding === "base64"
          ? e.body : bytesBase64(new TextEncoder().encode(e.body));
        prelude = "# The body is not UTF-8 text (or holds NUL bytes), so it cannot be an argument:\n" +
          "# it is written to a file first and sent from there byte for byte.\n" +
          "base64 -d > hookrelay-body.bin <<'EOF'\n" +
          (b64.match(/.{1,76}/g) || []).join("\n") + "\nEOF\n";
        args.push("--data-binary @hookrelay-body.bin");
      } else {
        args.push("--data-raw " + shellQuote(e.body));
      }
    }
    return prelude + args.join(" \\\n  ");
  }

  async function copyCurl() {
    if (!openEvent) return;
    pinned = true;
    closeEditor();
    const command = curlCommand(openEvent);
    const box = $("curl");
    box.value = command;
    $("curl-box").hidden = false;
    box.focus();
    box.select();
    try {
      await navigator.clipboard.writeText(command);
      $("action-state").textContent = "Copied the curl command.";
    } catch {
      $("action-state").textContent = "Select the command below and copy it.";
    }
  }

  // ---- wiring ----

  document.addEventListener("DOMContentLoaded", () => {
    $("channel").textContent = channel;
    document.title = channel + " – hookrelay inspector";
    $("webhook-url").textContent = webhookBase + "/…";
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      token = value;
      sessionStorage.setItem(tokenKey, value);
      $("token").value = "";
      start();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(tokenKey);
      token = null;
      rows.clear();
      openId = null;
      openEvent = null;
      pinned = false;
      $("deliveries").replaceChildren();
      $("detail").hidden = true;
      showLogin("");
    });
    $("replay").addEventListener("click", replay);
    $("edit-replay").addEventListener("click", openEditor);
    $("editor").addEventListener("submit", sendEdited);
    $("edit-cancel").addEventListener("click", () => {
      closeEditor();
      $("edit-replay").focus();
    });
    $("copy-curl").addEventListener("click", copyCurl);
    $("filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      applyFilter();
    });
    $("type-filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(applyFilter, FILTER_DELAY_MS);
    });
    const linked = new URLSearchParams(location.search).get("type");
    if (linked != null) {
      $("type-filter").value = linked;
      applyFilter();
    }
    if (tokenNeeded && !token) showLogin("");
    else start();
  });
})();
