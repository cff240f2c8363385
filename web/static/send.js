// Sending messages so that nothing typed is ever lost, and the connection status bar.
// Without this file the form still posts and the server's 303 reloads the page.
//
// A message goes into a pending bubble and into an outbox in localStorage before it is
// posted; it leaves the outbox only once the server has stored it. Every attempt sends
// the same idempotency key, so however often a message is sent it is stored once.
(() => {
  "use strict";

  const form = document.getElementById("message-form");
  const field = document.getElementById("message-text");
  const timeline = document.getElementById("timeline");
  if (!form || !field || !timeline) return;

  const words = form.dataset; // every word shown to people comes from the template
  const keyField = form.querySelector("input[name=idempotency_key]");
  const counter = document.getElementById("message-count");
  const refusal = document.getElementById("message-refused");
  const statusBar = document.getElementById("connection");
  const action = form.getAttribute("action");
  const room = action.split("/")[2];
  const MAX = Number(words.max) || 2000;
  const COUNT_FROM = Number(words.countFrom) || MAX - 200;
  const ANSWER_WITHIN_MS = 10000;
  const SHOWN_WITHIN_MS = 4000;
  const numbers = new Intl.NumberFormat(document.documentElement.lang || undefined);

  const has = (object, name) => Object.prototype.hasOwnProperty.call(object, name);
  const fill = (template, values) =>
    (template || "").replace(/\{(\w+)\}/g, (all, name) => (has(values, name) ? values[name] : all));

  // crypto.randomUUID exists only on secure origins; getRandomValues works everywhere.
  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(18));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
  }

  // -- storage: the outbox and the draft, per room ------------------------------------
  // Private modes and full disks make localStorage throw: then Sala works from memory.
  const OUTBOX = `sala.outbox.${room}`;
  const DRAFT = `sala.draft.${room}`;

  function load(name) {
    try {
      return localStorage.getItem(name);
    } catch {
      return null;
    }
  }

  function store(name, value) {
    try {
      if (value === null) localStorage.removeItem(name);
      else localStorage.setItem(name, value);
    } catch {
      /* memory only */
    }
  }

  // Read, change and write back each time, so two tabs of one room keep each other's items.
  const outbox = {
    all() {
      try {
        const list = JSON.parse(load(OUTBOX) || "[]");
        return Array.isArray(list)
          ? list.filter((i) => i && typeof i.key === "string" && typeof i.text === "string")
          : [];
      } catch {
        return [];
      }
    },
    put(item) {
      const saved = { key: item.key, text: item.text, created: item.created };
      if (item.replyTo) saved.replyTo = item.replyTo;
      if (item.refused) saved.refused = item.refused;
      const list = outbox.all().filter((i) => i.key !== item.key);
      list.push(saved);
      store(OUTBOX, JSON.stringify(list));
    },
    drop(key) {
      const list = outbox.all().filter((i) => i.key !== key);
      store(OUTBOX, list.length ? JSON.stringify(list) : null);
    },
  };

  // -- the field: Enter sends, it grows, the counter ----------------------------------

  // What the server counts: code points of the trimmed text.
  const lengthOf = (text) => [...text.trim()].length;

  // Browsers with `field-sizing: content` grow the field in CSS; others get its height here.
  const sizeInScript = !(window.CSS && CSS.supports("field-sizing", "content"));

  function fitHeight() {
    if (!sizeInScript) return;
    const style = getComputedStyle(field);
    const borders = parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
    field.style.height = "auto";
    field.style.height = `${field.scrollHeight + borders}px`; // CSS max-height caps it
  }

  function showCount() {
    const count = lengthOf(field.value);
    const over = count > MAX;
    const text = fill(over ? words.tooLong : words.count, {
      count: numbers.format(count),
      max: numbers.format(MAX),
    });
    if (counter) {
      counter.hidden = count < COUNT_FROM;
      if (counter.textContent !== text) counter.textContent = text;
      counter.classList.toggle("over", over);
    }
    if (over) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
    if (!over && refusal) refusal.hidden = true;
  }

  function fieldChanged() {
    showCount();
    fitHeight();
    store(DRAFT, field.value ? field.value : null);
  }

  field.addEventListener("input", fieldChanged);

  field.addEventListener("keydown", (event) => {
    // Not while an input method is composing: there Enter picks the word.
    if (event.key !== "Enter" || event.shiftKey || event.altKey) return;
    if (event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    send();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  // -- pending bubbles -------------------------------------------------------------------

  function bubbleFor(item) {
    const entry = document.createElement("li");
    entry.className = "entry message mine pending";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const text = document.createElement("p");
    text.className = "text";
    text.dir = "auto";
    text.textContent = item.text.trim();
    const line = document.createElement("p");
    line.className = "send-status";
    const state = document.createElement("span");
    state.className = "send-state";
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = words.retry;
    retry.hidden = true;
    retry.addEventListener("click", () => retryNow(true));
    line.append(state, retry);
    bubble.append(text, line);
    entry.append(bubble);
    timeline.append(entry);
    return entry;
  }

  function setState(item, state, note) {
    const entry = item.bubble;
    if (!entry || (entry.dataset.state === state && !note)) return;
    // A reader at the bottom stays there when the bubble grows a status line.
    const scroller = entry.parentElement;
    const atBottom =
      scroller && scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
    requestAnimationFrame(() => {
      if (atBottom && scroller) scroller.scrollTop = scroller.scrollHeight;
    });
    entry.dataset.state = state;
    const label = {
      sending: words.sending,
      failed: words.notSent,
      sent: words.sent,
      refused: note,
    }[state];
    entry.querySelector(".send-state").textContent = label || "";
    const retry = entry.querySelector(".retry");
    if (retry.hidden !== (state !== "failed")) {
      // Keep keyboard focus somewhere useful when the button it sits on goes away.
      if (state !== "failed" && document.activeElement === retry) field.focus();
      retry.hidden = state !== "failed";
    }
  }

  function removeBubble(item) {
    const entry = item.bubble;
    if (!entry) return;
    if (entry.contains(document.activeElement)) field.focus();
    entry.remove();
    item.bubble = null;
  }

  // -- the queue: one message at a time, in order -------------------------------------

  const queue = []; // not stored yet; queue[0] is the one being sent
  const refused = []; // refused in words; their text goes back into the field when it is free
  const shown = new Map(); // entry id → item: stored, waiting for the entry to show up
  let sending = false;
  let paused = null; // after an attempt that did not store: "failed", or "waiting" on a 429
  let failures = 0;
  let retryTimer = 0;

  function send() {
    const text = field.value;
    if (!text.trim()) {
      field.focus();
      return;
    }
    const count = lengthOf(text);
    if (count > MAX) {
      // Refused here, in words; nothing is cut and nothing is sent.
      if (refusal) {
        refusal.textContent = fill(words.refused, {
          count: numbers.format(count),
          max: numbers.format(MAX),
        });
        refusal.hidden = false;
      }
      field.focus();
      return;
    }
    if (refusal) refusal.hidden = true;
    // Refused bubbles whose text went back into the field have done their job.
    for (const item of refused.filter((i) => i.putBack)) forget(refused, item);

    const item = { key: newKey(), text, created: new Date().toISOString() };
    const replyField = form.querySelector("input[name=reply_to]");
    if (replyField && replyField.value) item.replyTo = replyField.value;
    outbox.put(item); // before anything else: from here on, a refresh keeps it
    // The reply goes with this message: the next one is a plain one again.
    document.dispatchEvent(new CustomEvent("sala:reply-sent"));
    item.bubble = bubbleFor(item);
    queue.push(item);
    field.value = "";
    if (keyField) keyField.value = newKey();
    fieldChanged();
    field.focus();
    showQueue();
    if (paused === "failed") retryNow(); // someone sending now expects the others to go too
    else pump();
  }

  function forget(list, item) {
    const at = list.indexOf(item);
    if (at >= 0) list.splice(at, 1);
    removeBubble(item);
  }

  function showQueue() {
    for (const item of queue) {
      const inFlight = sending && item === queue[0];
      setState(item, paused === "failed" && !inFlight ? "failed" : "sending");
    }
  }

  async function pump() {
    if (sending || paused || !queue.length) return;
    const item = queue[0];
    sending = true;
    showQueue();
    let outcome = {};
    try {
      outcome = await post(item);
    } finally {
      sending = false;
    }
    if (outcome.stored) {
      queue.shift();
      outbox.drop(item.key);
      failures = 0;
      awaitEntry(item, outcome.id);
    } else if (outcome.refused) {
      queue.shift();
      item.refused = outcome.refused;
      refused.push(item);
      outbox.put(item); // kept (not to be sent again) until its text is back in the field
      setState(item, "refused", outcome.refused);
      putBack();
    } else if (outcome.wait) {
      // Too fast: not something the person can fix, so it stays "Sending…".
      paused = "waiting";
      retryAfter(outcome.wait);
    } else {
      paused = "failed";
      failures += 1;
      const backoff = 2000 * 2 ** Math.min(failures - 1, 4);
      retryAfter(backoff * (0.8 + Math.random() * 0.4));
    }
    showQueue();
    pump();
  }

  function retryAfter(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => retryNow(true), ms);
  }

  // The Retry button, the backoff timer, and the connection coming back all land here.
  // A 429's wait is kept, except by its own timer and the Retry button.
  function retryNow(insist) {
    if (!paused || sending || (paused === "waiting" && !insist)) return;
    clearTimeout(retryTimer);
    paused = null;
    pump();
  }

  async function post(item) {
    // No answer in time counts as a failure; the timer also covers reading the answer.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ANSWER_WITHIN_MS);
    try {
      return await answer(item, abort.signal);
    } finally {
      clearTimeout(timer);
    }
  }

  async function answer(item, signal) {
    let response;
    try {
      response = await fetch(action, {
        method: "POST",
        headers: { "HX-Request": "true", "Idempotency-Key": item.key },
        body: new URLSearchParams({
          text: item.text,
          idempotency_key: item.key,
          ...(item.replyTo ? { reply_to: item.replyTo } : {}),
        }),
        credentials: "same-origin",
        signal,
      });
    } catch {
      return {}; // offline, the network failed, or no answer in time: retry
    }
    // A redirect means something (a proxy, a login page) answered instead of Sala.
    if (response.ok && !response.redirected) {
      const id = response.headers.get("Sala-Entry-Id") || "";
      return { stored: true, id: /^\d{1,18}$/.test(id) ? id : null };
    }
    if (response.status === 429) {
      const seconds = Number(response.headers.get("Retry-After"));
      return { wait: 1000 * (seconds > 0 ? Math.min(seconds, 300) : 2) };
    }
    if (response.status >= 400 && response.status < 500 && response.status !== 408) {
      return { refused: await serverWords(response) };
    }
    return {}; // 5xx, 408, anything else: retry
  }

  // The answer is a fragment with the reason in `.form-error`. DOMParser runs no scripts.
  async function serverWords(response) {
    try {
      const html = await response.text();
      const found = new DOMParser().parseFromString(html, "text/html").querySelector(".form-error");
      const text = found && found.textContent.trim();
      if (text) return text;
    } catch {
      /* fall through */
    }
    return `${words.notSent} (${response.status})`;
  }

  // The oldest refused text goes back into the field as soon as the field is empty.
  function putBack() {
    if (field.value.trim()) return;
    const item = refused.find((i) => !i.putBack);
    if (!item) return;
    item.putBack = true;
    field.value = item.text;
    fieldChanged();
    outbox.drop(item.key); // the field (and its draft) holds it now
  }

  // A stored message's bubble goes when its entry is in the timeline, whether the stream
  // brought it before or after the answer. If it does not come (the stream is down), the
  // bubble says "Sent" and goes once the entry arrives after a reconnect.
  function awaitEntry(item, id) {
    if (!document.getElementById("stream") && !queue.length) {
      // An older page of history is not live: show the latest, as the plain form does.
      location.assign(`/rooms/${room}`);
      return;
    }
    if (!id) {
      setState(item, "sent");
      return;
    }
    if (document.getElementById(`entry-${id}`)) {
      removeBubble(item);
      return;
    }
    shown.set(id, item);
    setState(item, "sending");
    setTimeout(() => {
      if (shown.get(id) === item) setState(item, "sent");
    }, SHOWN_WITHIN_MS);
  }

  new MutationObserver(() => {
    for (const [id, item] of shown) {
      if (document.getElementById(`entry-${id}`)) {
        shown.delete(id);
        removeBubble(item);
      }
    }
  }).observe(timeline, { childList: true, subtree: true });

  // -- the connection: status bar and reconnecting at once ----------------------------

  let cursor = 0; // the newest event id seen: where a fresh stream resumes
  let down = false;
  let downShown = false;
  let downTimer = 0;
  let downAt = 0;
  let ownAttempts = 0;
  let ownTimer = 0;
  let hiddenAt = 0;
  let gone = false; // the server says this reader is not in the room (left in another tab)

  const currentStream = () => document.getElementById("stream");
  {
    const stream = currentStream();
    if (stream) {
      const after = new URL(stream.getAttribute("hx-sse:connect"), location.href).searchParams;
      cursor = Number(after.get("after")) || 0;
    }
  }

  function showStatus() {
    if (!statusBar) return;
    const offline = navigator.onLine === false;
    const text = gone ? words.gone : offline ? words.offline : downShown ? words.reconnecting : "";
    if (statusBar.textContent !== text) statusBar.textContent = text;
    statusBar.hidden = !text;
    statusBar.classList.toggle("offline", offline);
  }

  // Routine reconnects (a stream ending itself) take a moment: only say so if they drag on.
  function markDown(graceMs) {
    down = true;
    const at = Date.now() + graceMs;
    if (downShown || (downTimer && downAt <= at)) return;
    clearTimeout(downTimer);
    downAt = at;
    downTimer = setTimeout(() => {
      downTimer = 0;
      if (down) {
        downShown = true;
        showStatus();
      }
    }, graceMs);
  }

  function markUp() {
    const wasDown = down;
    down = false;
    downShown = false;
    clearTimeout(downTimer);
    downTimer = 0;
    clearTimeout(ownTimer);
    ownTimer = 0;
    ownAttempts = 0;
    showStatus();
    if (wasDown) retryNow();
  }

  // Start the stream over on a fresh element, from the newest event seen (the server
  // replays what was missed; app.js drops entries already shown). Same as app.js does
  // when it switches to poll mode.
  function reconnectStream() {
    const stream = currentStream();
    if (gone || !stream || !window.htmx || navigator.onLine === false) return;
    clearTimeout(ownTimer);
    ownTimer = 0;
    const url = new URL(stream.getAttribute("hx-sse:connect"), location.href);
    if (cursor) url.searchParams.set("after", String(cursor));
    const fresh = stream.cloneNode(false);
    fresh.setAttribute("hx-sse:connect", url.pathname + url.search);
    htmx.trigger(stream, "htmx:abort");
    // hx-sse keeps its connection on the element: end it now, not at its next read
    // (which could be a heartbeat away) or after its backoff delay.
    const connection = stream._htmx && stream._htmx.sse;
    if (connection) {
      if (connection.delayCanceller) connection.delayCanceller();
      if (connection.reader) connection.reader.cancel().catch(() => {});
      if (connection.abortController) connection.abortController.abort();
    }
    stream.replaceWith(fresh);
    htmx.process(fresh);
  }

  // When hx-sse has given up (the first request failed, so it never started its own
  // retries), try again with a backoff of our own.
  function reconnectLater() {
    if (gone || ownTimer) return;
    const delay = Math.min(15000, 1000 * 2 ** Math.min(ownAttempts, 4)) * (0.7 + Math.random() * 0.6);
    ownAttempts += 1;
    ownTimer = setTimeout(() => {
      ownTimer = 0;
      reconnectStream();
    }, delay);
  }

  const fromCurrentStream = (event) => event.target === currentStream();

  document.addEventListener("htmx:sse:after:connection", (event) => {
    if (fromCurrentStream(event)) markUp();
  });
  document.addEventListener("htmx:sse:before:message", (event) => {
    const id = Number(event.detail && event.detail.message && event.detail.message.id);
    if (id > cursor) cursor = id;
    if (down && fromCurrentStream(event)) markUp();
  });
  document.addEventListener("htmx:sse:before:connection", (event) => {
    const connection = event.detail && event.detail.connection;
    if (connection && connection.attempt > 0 && fromCurrentStream(event)) markDown(4000);
  });
  document.addEventListener("htmx:sse:error", (event) => {
    if (!fromCurrentStream(event)) return;
    const status = event.detail && event.detail.status;
    if (status === 403 || status === 404) {
      // Left in another tab (or the room is gone): retrying cannot help; say so.
      gone = true;
      showStatus();
      return;
    }
    markDown(500);
  });
  document.addEventListener("htmx:sse:close", (event) => {
    if (!fromCurrentStream(event)) return; // a stream we replaced
    markDown(500);
    reconnectLater();
  });
  document.addEventListener("htmx:finally:request", (event) => {
    const stream = event.target;
    if (stream !== currentStream() || (stream._htmx && stream._htmx.sse)) return;
    markDown(500); // the stream's request ended without a stream starting
    reconnectLater();
  });

  window.addEventListener("online", () => {
    showStatus();
    reconnectStream();
    retryNow();
  });
  window.addEventListener("offline", showStatus);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      hiddenAt = Date.now();
      return;
    }
    // A phone that slept may hold a dead connection that has not noticed yet.
    if (down || (hiddenAt && Date.now() - hiddenAt > 30000)) reconnectStream();
    retryNow();
  });
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return; // back from the back/forward cache
    reconnectStream();
    retryNow();
  });

  // Leaving the room: whatever is still here would only be refused now, and a shared
  // computer should not keep it for the next person.
  const leave = document.querySelector("form.leave");
  if (leave) {
    leave.addEventListener("submit", () => {
      store(DRAFT, null);
      store(OUTBOX, null);
    });
  }

  // -- on load: the draft, then what a refresh interrupted --------------------------------

  if (!field.value) {
    const draft = load(DRAFT);
    if (draft) field.value = draft;
  }
  for (const saved of outbox.all()) {
    const item = { key: saved.key, text: saved.text, created: saved.created };
    if (saved.replyTo) item.replyTo = saved.replyTo;
    item.bubble = bubbleFor(item);
    if (typeof saved.refused === "string") {
      item.refused = saved.refused;
      refused.push(item);
      setState(item, "refused", saved.refused);
    } else {
      queue.push(item);
    }
  }
  putBack();
  showCount();
  fitHeight();
  showStatus();
  showQueue();
  pump();
})();
