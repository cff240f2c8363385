// Sala's few lines of JavaScript: local times, "mine", scrolling, unread count,
// copying the invite link. Everything works without it, just not live.
(() => {
  "use strict";

  const me = document.body.dataset.me || "";
  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

  function localizeTimes(root) {
    for (const time of root.querySelectorAll("time[datetime]:not([data-local])")) {
      const moment = new Date(time.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      time.textContent = clock.format(moment);
      time.title = full.format(moment);
      time.dataset.local = "";
    }
  }

  function markMine(root) {
    if (!me) return;
    for (const entry of root.querySelectorAll(".entry[data-author]")) {
      if (entry.dataset.author === me) entry.classList.add("mine");
    }
  }

  function prepare(root) {
    localizeTimes(root);
    markMine(root);
  }

  prepare(document);

  // Copy the invite link.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.querySelector(button.dataset.copy);
      if (!field) return;
      try {
        await navigator.clipboard.writeText(field.value);
      } catch {
        field.select();
        document.execCommand("copy");
      }
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }

  // Sending: the field empties at once, as in any chat; whatever is typed while the
  // message is on its way survives the fresh form the server sends back.
  let typedMeanwhile = "";
  const messageField = () => document.querySelector("#message-form [name=text]");
  document.addEventListener("htmx:before:request", (event) => {
    if (event.target.id !== "message-form") return;
    const field = messageField();
    if (field) field.value = "";
  });
  document.addEventListener("htmx:before:swap", (event) => {
    const field = messageField();
    typedMeanwhile = field && event.target.id === "message-form" ? field.value : "";
  });
  document.addEventListener("htmx:after:swap", () => {
    const field = messageField();
    if (field && typedMeanwhile && !field.value) field.value = typedMeanwhile;
    typedMeanwhile = "";
  });

  const timeline = document.getElementById("timeline");
  if (!timeline) return;

  const newMessages = document.getElementById("new-messages");
  const baseTitle = document.title;
  let unread = 0;
  let lastHeight = timeline.scrollHeight;
  let atBottom = true;

  const isNearBottom = () =>
    timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 60;
  const scrollToBottom = () => {
    timeline.scrollTop = timeline.scrollHeight;
    atBottom = true;
    if (newMessages) newMessages.hidden = true;
  };

  function loadOlder() {
    const link = document.querySelector("#load-older a");
    if (!link || link.dataset.loading) return;
    link.dataset.loading = "1";
    link.click();
  }

  timeline.addEventListener("scroll", () => {
    atBottom = isNearBottom();
    if (atBottom && newMessages) newMessages.hidden = true;
    if (timeline.scrollTop < 40) loadOlder();
  }, { passive: true });

  if (newMessages) newMessages.addEventListener("click", scrollToBottom);

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  new MutationObserver((records) => {
    let appendedMessages = 0;
    let appendedMine = false;
    let prepended = false;
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        prepare(node.parentNode || node);
        if (!node.classList.contains("entry")) continue;
        if (record.nextSibling === null) {
          if (node.classList.contains("message")) {
            if (node.classList.contains("mine")) appendedMine = true;
            else appendedMessages += 1;
          }
        } else {
          prepended = true;
        }
      }
    }
    if (prepended) {
      // Older entries went in above: keep what the reader was looking at in place.
      timeline.scrollTop += timeline.scrollHeight - lastHeight;
    }
    if (appendedMine || (atBottom && !prepended)) {
      scrollToBottom();
    } else if (appendedMessages && newMessages) {
      newMessages.hidden = false;
    }
    if (appendedMessages && document.hidden) {
      unread += appendedMessages;
      document.title = `(${unread}) ${baseTitle}`;
    }
    lastHeight = timeline.scrollHeight;
  }).observe(timeline, { childList: true });

  scrollToBottom();
  lastHeight = timeline.scrollHeight;

  // The live stream. Some proxies and antivirus products hold a response until it
  // ends, so a stream never shows its first event; then switch to poll mode, where
  // every response ends as soon as it has sent something and htmx reconnects with
  // its cursor (Last-Event-ID), which works as long-polling.
  const FIRST_EVENT_WITHIN_MS = 5000;
  let heardFromServer = false;

  function newestId() {
    const entries = timeline.querySelectorAll(".entry[id^='entry-']");
    const last = entries[entries.length - 1];
    return last ? last.id.slice("entry-".length) : null;
  }

  function switchToPolling() {
    const stream = document.getElementById("stream");
    if (!stream || stream.dataset.mode === "poll") return;
    const url = new URL(stream.getAttribute("hx-sse:connect"), location.href);
    url.searchParams.set("mode", "poll");
    const newest = newestId();
    if (newest) url.searchParams.set("after", newest);
    // The held request never answers: abort it and start over on a fresh element.
    htmx.trigger(stream, "htmx:abort");
    const polling = stream.cloneNode(false);
    polling.setAttribute("hx-sse:connect", url.pathname + url.search);
    polling.dataset.mode = "poll";
    stream.replaceWith(polling);
    htmx.process(polling);
  }

  if (document.getElementById("stream")) {
    setTimeout(() => {
      if (!heardFromServer) switchToPolling();
    }, FIRST_EVENT_WITHIN_MS);
  }

  document.addEventListener("htmx:sse:before:message", (event) => {
    heardFromServer = true;
    // Never show an entry twice, whatever the network did. (The id htmx reports
    // is the last one seen, also for id-less presence events: check the data.)
    const message = event.detail && event.detail.message;
    if (!message || !message.id) return;
    const own = `id="entry-${message.id}"`;
    if ((message.data || "").includes(own) && document.getElementById(`entry-${message.id}`)) {
      event.detail.cancelled = true;
    }
  });
})();
