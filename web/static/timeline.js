// The shape of the conversation, computed in the reader's browser (time zone and
// language are theirs, and the stream's fragments are shared by every reader):
// day separators, messages grouped by author, runs of joins/leaves folded into
// one line, and long messages folded to their first lines until opened. Whenever
// entries come in (live, or older ones on top), it is all worked out again over
// the whole list: a few hundred elements, cheap and simple.
(() => {
  "use strict";

  const timeline = document.getElementById("timeline");
  if (!timeline) return;

  const GROUP_WITHIN_MS = 5 * 60 * 1000;
  // Notices in a row that fold: people coming and going (a leave among three or more),
  // or a crowd arriving (five or more). A few joins read better as they are.
  const foldable = (run) =>
    run.length >= 5 || (run.length >= 3 && run.some((entry) => entry.classList.contains("leave")));
  const words = {
    today: timeline.dataset.today || "Today",
    yesterday: timeline.dataset.yesterday || "Yesterday",
    joined: timeline.dataset.joined || "{names} joined",
    left: timeline.dataset.left || "{names} left",
    cameAndWent: timeline.dataset.cameAndWent || "{names} came and went",
    // Languages whose verb agrees with how many people (Portuguese: entrou / entraram).
    joinedMany: timeline.dataset.joinedMany || timeline.dataset.joined || "{names} joined",
    leftMany: timeline.dataset.leftMany || timeline.dataset.left || "{names} left",
    cameAndWentMany: timeline.dataset.cameAndWentMany || timeline.dataset.cameAndWent || "{names} came and went",
    andOthers: timeline.dataset.andOthers || "{names} and {count} others",
    and: timeline.dataset.and || "{first} and {second}",
    show: timeline.dataset.show || "Show",
    hide: timeline.dataset.hide || "Hide",
    more: timeline.dataset.more || "Read more",
    less: timeline.dataset.less || "Read less",
  };
  // A message taller than this (in rem) folds to timeline.css's max-height (16rem):
  // one pasted wall of text, or a few hundred empty lines, no longer fills every
  // reader's screen many times over. Without JavaScript every message shows in full.
  const LONG_REM = 24;
  const lang = document.documentElement.lang || undefined;
  const numbers = new Intl.NumberFormat(lang);
  const dayFormat = new Intl.DateTimeFormat(lang, { weekday: "long", day: "numeric", month: "long" });
  const yearFormat = new Intl.DateTimeFormat(lang, { day: "numeric", month: "long", year: "numeric" });
  const expanded = new Set(); // folds the reader opened, by their first entry's id
  const opened = new Set(); // long messages the reader opened, by entry id

  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_, key) => (key in values ? values[key] : ""));

  function when(entry) {
    const time = entry.querySelector("time[datetime]");
    const moment = time ? new Date(time.getAttribute("datetime")) : null;
    return moment && !Number.isNaN(moment.getTime()) ? moment : null;
  }

  function dayKey(moment) {
    return `${moment.getFullYear()}-${moment.getMonth()}-${moment.getDate()}`;
  }

  function dayLabel(moment) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(moment) === dayKey(today)) return words.today;
    if (dayKey(moment) === dayKey(yesterday)) return words.yesterday;
    return (moment.getFullYear() === today.getFullYear() ? dayFormat : yearFormat).format(moment);
  }

  function distinctNames(notices) {
    const names = [];
    for (const notice of notices) {
      const author = notice.querySelector(".author");
      const name = author ? author.textContent : "";
      if (name && !names.includes(name)) names.push(name);
    }
    return names;
  }

  function namesOf(names) {
    if (names.length === 1) return names[0];
    if (names.length <= 3) {
      return fill(words.and, { first: names.slice(0, -1).join(", "), second: names[names.length - 1] });
    }
    return fill(words.andOthers, { names: names.slice(0, 2).join(", "), count: numbers.format(names.length - 2) });
  }

  function foldLine(run) {
    const kinds = new Set(run.map((entry) => (entry.classList.contains("join") ? "join" : "leave")));
    const names = distinctNames(run);
    const many = names.length > 1;
    const template =
      kinds.size > 1
        ? many ? words.cameAndWentMany : words.cameAndWent
        : kinds.has("join")
          ? many ? words.joinedMany : words.joined
          : many ? words.leftMany : words.left;
    const key = run[0].id;
    const open = expanded.has(key);
    const line = document.createElement("li");
    line.className = "fold";
    line.dataset.first = key;
    const text = document.createElement("span");
    text.textContent = fill(template, { names: namesOf(names) });
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "fold-toggle";
    toggle.textContent = open ? words.hide : words.show;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.addEventListener("click", () => {
      if (expanded.has(key)) expanded.delete(key);
      else expanded.add(key);
      shape();
    });
    line.append(text, " ", toggle);
    for (const entry of run) entry.hidden = !open;
    return line;
  }

  function foldLongMessages() {
    const texts = [...timeline.querySelectorAll(":scope > .entry.message .bubble > .text")];
    const limit = LONG_REM * parseFloat(getComputedStyle(document.documentElement).fontSize);
    // Every height read before anything is written: one layout, not one per message.
    // (scrollHeight is the whole text's height, folded or not.)
    const long = texts.map((text) => text.scrollHeight > limit);
    texts.forEach((text, i) => {
      const next = text.nextElementSibling;
      let toggle = next && next.classList.contains("more-toggle") ? next : null;
      if (!long[i]) {
        text.classList.remove("clamped");
        if (toggle) toggle.remove();
        return;
      }
      const key = text.closest(".entry").id;
      const open = opened.has(key);
      text.classList.toggle("clamped", !open);
      if (!toggle) {
        toggle = document.createElement("button");
        toggle.type = "button";
        toggle.className = "more-toggle";
        toggle.addEventListener("click", () => {
          if (opened.has(key)) opened.delete(key);
          else opened.add(key);
          foldLongMessages();
        });
        text.after(toggle);
      }
      toggle.textContent = open ? words.less : words.more;
      toggle.setAttribute("aria-expanded", String(open));
    });
  }

  function shape() {
    for (const made of timeline.querySelectorAll(".day-separator, .fold")) made.remove();
    const entries = [...timeline.querySelectorAll(":scope > .entry")];
    let previous = null;
    let previousDay = "";
    let run = [];
    const closeRun = () => {
      if (foldable(run)) run[0].before(foldLine(run));
      else for (const entry of run) entry.hidden = false;
      run = [];
    };
    for (const entry of entries) {
      const moment = when(entry);
      if (moment && dayKey(moment) !== previousDay) {
        closeRun();
        previousDay = dayKey(moment);
        const separator = document.createElement("li");
        separator.className = "day-separator";
        separator.setAttribute("role", "separator");
        separator.dataset.day = previousDay;
        separator.textContent = dayLabel(moment);
        entry.before(separator);
        previous = null;
      }
      const isNotice = entry.classList.contains("join") || entry.classList.contains("leave");
      if (isNotice) {
        run.push(entry);
        previous = null;
        continue;
      }
      closeRun();
      // Messages from one person within a few minutes: the name once, tighter spacing.
      const grouped =
        previous !== null &&
        entry.classList.contains("message") &&
        previous.classList.contains("message") &&
        entry.dataset.author === previous.dataset.author &&
        moment && when(previous) && moment - when(previous) < GROUP_WITHIN_MS;
      entry.classList.toggle("grouped", Boolean(grouped));
      previous = entry;
    }
    closeRun();
    foldLongMessages();
    // Our own changes are not news: drop their records.
    observer.takeRecords();
  }

  const observer = new MutationObserver(shape);
  observer.observe(timeline, { childList: true });

  // "Today" becomes "Yesterday" at the reader's midnight.
  function atMidnight() {
    const now = new Date();
    const next = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1, 0, 0, 1);
    setTimeout(() => { shape(); atMidnight(); }, next - now);
  }

  shape();
  atMidnight();
})();
