// Sala's few lines of JavaScript: local times, "mine", scrolling, unread count,
// sharing the invite link, the folding member list. Everything works without it,
// just not live.
(() => {
  "use strict";

  document.documentElement.classList.remove("no-js");
  const me = document.body.dataset.me || "";
  // Dates and numbers in the page's language (not the browser's), in the reader's time zone.
  const lang = document.documentElement.lang || undefined;
  const clock = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
  const full = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "long" });
  const numbers = new Intl.NumberFormat(lang);

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

  // @Name of this reader stands out more than other mentions.
  function markMentions(root) {
    if (!me) return;
    for (const mention of root.querySelectorAll(".mention[data-tag]")) {
      if (mention.dataset.tag === me) mention.classList.add("mention-me");
    }
  }

  function prepare(root) {
    localizeTimes(root);
    markMine(root);
    markMentions(root);
  }

  prepare(document);

  // The invite link: Copy on wide screens, Share on phones (app.css picks one). Both
  // are rendered hidden, since without JavaScript they could not work.
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // No Clipboard API outside secure contexts (a phone on http://192.168.…): the
      // old way still works during a click, on a field that is in the page.
      const scratch = document.createElement("textarea");
      scratch.value = text;
      scratch.readOnly = true;
      scratch.className = "visually-hidden";
      document.body.append(scratch);
      scratch.select();
      scratch.setSelectionRange(0, text.length);
      let copied = false;
      try {
        copied = document.execCommand("copy");
      } catch {
        copied = false;
      }
      scratch.remove();
      return copied;
    }
  }

  function sayDone(button) {
    if (button.dataset.saying) return;
    button.dataset.saying = "1";
    const label = [...button.childNodes]; // a word, or an icon with its word
    button.textContent = button.dataset.done || "Copied";
    setTimeout(() => {
      button.replaceChildren(...label);
      delete button.dataset.saying;
    }, 1500);
  }

  // If nothing could copy, show the link itself so it can be copied by hand.
  function showLink(field) {
    const invite = field.closest(".invite");
    if (invite) invite.classList.add("show-link");
    field.focus();
    field.select();
  }

  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.querySelector(button.dataset.copy);
      if (!field) return;
      if (await copyText(field.value)) sayDone(button);
      else showLink(field);
    });
  }

  for (const button of document.querySelectorAll("button[data-share]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.querySelector(button.dataset.share);
      if (!field) return;
      if (navigator.share) {
        try {
          await navigator.share({ title: document.title, url: field.value });
          return;
        } catch (error) {
          // The reader closed the share sheet: that is an answer, not a failure.
          if (error && error.name === "AbortError") return;
        }
      }
      if (await copyText(field.value)) sayDone(button);
      else showLink(field);
    });
  }

  // The member list is a <details>: folded on phones, open on wide screens. Presence
  // updates replace the element (out-of-band swap, rendered closed), so remember what
  // the reader chose and put it back on each new copy.
  const wide = window.matchMedia("(min-width: 701px)");
  let membersOpen = wide.matches;
  function restoreMembers() {
    const members = document.getElementById("members");
    if (members && members.open !== membersOpen) members.open = membersOpen;
  }
  restoreMembers();
  document.addEventListener("toggle", (event) => {
    if (event.target.id === "members") membersOpen = event.target.open;
  }, true);
  const sidebar = document.querySelector(".sidebar");
  if (sidebar) new MutationObserver(restoreMembers).observe(sidebar, { childList: true });

  // The home form: Enter submits with its first button (Join). With a name and no
  // code there is nothing to join, so Enter creates a room instead of an error.
  const homeForm = document.querySelector("form.home-form");
  if (homeForm) {
    homeForm.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.target.tagName !== "INPUT" || event.isComposing) return;
      const code = homeForm.querySelector("[name=code]");
      const create = homeForm.querySelector("button[value=create]");
      if (create && code && !code.value.trim()) {
        event.preventDefault();
        homeForm.requestSubmit(create);
      }
    });
  }

  const timeline = document.getElementById("timeline");
  if (!timeline) return;

  const newMessages = document.getElementById("new-messages");
  const baseTitle = document.title;
  let unread = 0;
  let mentioned = 0;
  let unseen = 0; // messages below the reader's place, for "New message" / "New messages"
  let atBottom = true;

  const isNearBottom = () =>
    timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 60;
  const scrollToBottom = () => {
    timeline.scrollTop = timeline.scrollHeight;
    atBottom = true;
    if (newMessages) newMessages.hidden = true;
  };

  // The reader's place: the first entry in view and its distance from the top of the
  // timeline. Whatever then changes around it (an older page going in above, a message
  // edited in place, timeline.js regrouping the list in its own observer, the keyboard
  // shrinking the view), scrolling by however far it moved puts it back. An id, not the
  // element: an edit replaces the element, and it is still the same place.
  let anchorId = "";
  let anchorOffset = 0;

  function noteAnchor() {
    anchorId = "";
    const view = timeline.getBoundingClientRect();
    const x = view.left + view.width / 2;
    for (let y = view.top + 1; y < view.bottom; y += 8) {
      const hit = document.elementFromPoint(x, y);
      const entry = hit && hit.closest("#timeline > .entry[id]");
      if (entry) {
        anchorId = entry.id;
        anchorOffset = entry.getBoundingClientRect().top - view.top;
        return;
      }
    }
  }

  function keepAnchor() {
    const entry = anchorId && document.getElementById(anchorId);
    if (entry && entry.getClientRects().length) {
      const offset = entry.getBoundingClientRect().top - timeline.getBoundingClientRect().top;
      if (offset !== anchorOffset) timeline.scrollTop += offset - anchorOffset;
    }
    atBottom = isNearBottom();
  }

  // Stay at the newest message, or in place; then note the place for next time.
  function settle() {
    if (atBottom) timeline.scrollTop = timeline.scrollHeight;
    else keepAnchor();
    noteAnchor();
  }

  function loadOlder() {
    const link = document.querySelector("#load-older a");
    if (!link || link.dataset.loading) return;
    link.dataset.loading = "1";
    link.click();
  }

  timeline.addEventListener("scroll", () => {
    atBottom = isNearBottom();
    noteAnchor();
    if (atBottom && newMessages) newMessages.hidden = true;
    if (timeline.scrollTop < 40) loadOlder();
  }, { passive: true });

  if (newMessages) newMessages.addEventListener("click", scrollToBottom);

  // A phone's keyboard opening (or the message field growing by a line) makes the
  // timeline shorter without scrolling it: whoever was at the newest message stays
  // there, and whoever was reading back keeps their place.
  if (window.ResizeObserver) new ResizeObserver(settle).observe(timeline);

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      mentioned = 0;
      document.title = baseTitle;
    }
  });

  let settling = false;
  new MutationObserver((records) => {
    let appendedMessages = 0;
    let appendedMentions = 0;
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
            if (!node.classList.contains("mine") && node.querySelector(".mention-me")) {
              appendedMentions += 1;
            }
          }
        } else {
          prepended = true;
        }
      }
    }
    if (appendedMine || (atBottom && !prepended)) {
      scrollToBottom();
    } else {
      // Older entries went in above, or something changed: keep the reader's place.
      keepAnchor();
      if (appendedMessages && newMessages) {
        unseen = (newMessages.hidden ? 0 : unseen) + appendedMessages;
        const label = unseen > 1 ? newMessages.dataset.many : newMessages.dataset.one;
        if (label) newMessages.textContent = label;
        newMessages.hidden = false;
      }
    }
    if (appendedMessages && document.hidden) {
      // Mentions of this reader are counted apart: "(3 · @1) Room …".
      unread += appendedMessages - appendedMentions;
      mentioned += appendedMentions;
      const counts = [unread ? numbers.format(unread) : "", mentioned ? `@${numbers.format(mentioned)}` : ""];
      document.title = `(${counts.filter(Boolean).join(" · ")}) ${baseTitle}`;
    }
    noteAnchor();
    // Other scripts may still reshape the list after this (timeline.js, in its own
    // observer): settle once more before the next paint.
    if (!settling) {
      settling = true;
      requestAnimationFrame(() => {
        settling = false;
        settle();
      });
    }
  }).observe(timeline, { childList: true });

  scrollToBottom();
  noteAnchor();

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
