// The options of a message (react, reply, edit, delete) with a tap, a click or the
// keyboard; replying from the message field; Up-arrow to edit one's last message;
// Escape to cancel. Without this file each message's ⋯ opens a page with the same
// forms, and they post as plain forms.
(() => {
  "use strict";

  const timeline = document.getElementById("timeline");
  const form = document.getElementById("message-form");
  const field = document.getElementById("message-text");
  if (!timeline || !form || !field) return;

  const replyTo = document.getElementById("reply-to");
  const replying = document.getElementById("replying");
  const replyingAuthor = document.getElementById("replying-author");
  const replyingText = document.getElementById("replying-text");
  const replyingCancel = document.getElementById("replying-cancel");

  const sheet = () => document.getElementById("message-options");
  const isOpen = () => {
    const section = sheet();
    return Boolean(section && !section.hidden);
  };

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(18));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
  }

  function closeOptions() {
    const section = sheet();
    if (!section || section.hidden) return false;
    const message = section.dataset.message;
    const empty = document.createElement("section");
    empty.id = "message-options";
    empty.className = "message-options";
    empty.setAttribute("aria-label", section.getAttribute("aria-label") || "");
    empty.hidden = true;
    section.replaceWith(empty);
    // Back to where the reader was: the message's ⋯, or the message field.
    const back = message && document.querySelector(`#entry-${message} .options`);
    (back || field).focus();
    return true;
  }

  // The sheet comes from the same URL as the options page (htmx asks for the fragment).
  function openOptions(entry, edit) {
    const link = entry && entry.querySelector(".options");
    if (!link) return;
    const url = link.getAttribute("href") + (edit ? "?edit=1" : "");
    htmx.ajax("GET", url, { target: "#message-options", swap: "outerHTML" });
  }

  // A tap (or click) on a message opens its options; links, buttons and selecting
  // text keep their own meaning.
  timeline.addEventListener("click", (event) => {
    const target = event.target;
    if (!(target instanceof Element)) return;
    if (target.closest("a, button, form, input, textarea")) return;
    const selection = window.getSelection && window.getSelection();
    if (selection && String(selection).length) return;
    const entry = target.closest(".entry.message:not(.deleted):not(.pending)");
    if (entry) openOptions(entry, false);
  });

  // When a sheet arrives: focus what it is for.
  new MutationObserver(() => {
    const section = sheet();
    if (!section || section.hidden || section.dataset.focused) return;
    section.dataset.focused = "1";
    const editing = section.querySelector("textarea[data-editing]");
    if (editing) {
      editing.focus();
      editing.setSelectionRange(editing.value.length, editing.value.length);
    } else {
      const first = section.querySelector(".react-form button");
      if (first) first.focus();
    }
  }).observe(form.parentNode, { childList: true, subtree: true });

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    // A message's ⋯ (a plain link in every reader's copy of the message, kept small).
    const options = target.closest("#timeline .entry .options");
    if (options && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
      event.preventDefault();
      openOptions(options.closest(".entry"), false);
      return;
    }
    if (target.closest("#message-options .options-close")) {
      event.preventDefault();
      closeOptions();
      return;
    }
    const reply = target.closest("#message-options .reply-here");
    if (reply) {
      startReply(reply.dataset.reply, reply.dataset.author, reply.dataset.text);
      closeOptions();
      field.focus();
    }
  });

  function startReply(id, author, text) {
    if (!replyTo || !replying) return;
    replyTo.value = id;
    replyingAuthor.textContent = author || "";
    replyingText.textContent = text || "";
    replying.hidden = false;
  }

  function cancelReply() {
    if (!replyTo || !replying || replying.hidden) return false;
    replyTo.value = "";
    replying.hidden = true;
    return true;
  }

  if (replyingCancel) {
    replyingCancel.addEventListener("click", () => {
      cancelReply();
      field.focus();
    });
  }
  document.addEventListener("sala:reply-sent", cancelReply);

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (closeOptions() || cancelReply()) event.preventDefault();
      return;
    }
    const target = event.target;
    // Enter saves an edit (Shift+Enter is a new line), as Enter sends a message.
    if (
      event.key === "Enter" && !event.shiftKey && !event.isComposing &&
      target instanceof HTMLTextAreaElement && target.closest("#message-options .edit-form")
    ) {
      event.preventDefault();
      target.form.requestSubmit();
      return;
    }
    // Up-arrow in an empty message field edits one's last message.
    if (event.key === "ArrowUp" && target === field && field.value === "") {
      const mine = timeline.querySelectorAll(".entry.message.mine:not(.deleted):not(.pending)");
      const last = mine[mine.length - 1];
      if (last) {
        event.preventDefault();
        openOptions(last, true);
      }
    }
  });

  // A reaction button under a message is in every reader's copy of it, so it carries
  // no key of its own: give it one when first used (a double click sends the same
  // key twice and toggles once); the message comes back re-rendered, with a new form.
  document.addEventListener(
    "submit",
    (event) => {
      const target = event.target;
      if (!(target instanceof HTMLFormElement) || !target.closest(".reactions")) return;
      if (target.querySelector("input[name=idempotency_key]")) return;
      const key = document.createElement("input");
      key.type = "hidden";
      key.name = "idempotency_key";
      key.value = newKey();
      target.append(key);
    },
    true,
  );
})();
