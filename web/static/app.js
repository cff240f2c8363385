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
})();
