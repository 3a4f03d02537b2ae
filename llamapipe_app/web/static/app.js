// The llamapipe page: chat, RAG and PAL over the HTTP API, saved sessions, and sources with
// the cited slice highlighted. Every text from documents and models goes into the page as
// text nodes (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { session: null, busy: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

// -- talking to the server -------------------------------------------------------------------

class Problem extends Error {
  constructor(error, hint) {
    super(error);
    this.hint = hint || "";
  }
}

async function call(method, url, body, signal) {
  const response = await fetch(url, {
    method,
    signal,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    let problem = { error: `${response.status} ${response.statusText}`, hint: "" };
    try {
      problem = await response.json();
    } catch (_) {
      /* not JSON: keep the status line */
    }
    throw new Problem(problem.error, problem.hint);
  }
  return response;
}

// Server-sent events from a POST response: yields {name, data}.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { name, data: data ? JSON.parse(data) : null };
    }
  }
}

// -- messages --------------------------------------------------------------------------------

function addMessage(role, text) {
  const body = el("div", { class: "text" }, text || "");
  const box = el("div", { class: `msg ${role}` },
    el("div", { class: "who" }, role === "user" ? "you" : "llamapipe"), body);
  $("messages").append(box);
  box.scrollIntoView({ block: "end" });
  return { box, body };
}

function showProblem(box, problem) {
  box.append(el("div", { class: "problem" }, problem.message,
    problem.hint ? el("span", { class: "muted" }, ` (${problem.hint})`) : null));
}

// The checked answer with each [n] a link to its citation's source.
function linkCitations(body, answer, citations) {
  const byNumber = new Map(citations.map((c) => [c.n, c]));
  body.replaceChildren();
  let last = 0;
  for (const match of answer.matchAll(/\[(\d+)\]/g)) {
    const citation = byNumber.get(Number(match[1]));
    if (!citation) continue;
    body.append(answer.slice(last, match.index), citeLink(citation));
    last = match.index + match[0].length;
  }
  body.append(answer.slice(last));
}

function citeLink(citation) {
  return el("a", {
    class: "cite", href: "#", "data-n": String(citation.n),
    title: `${citation.source}${citation.page ? ` p.${citation.page}` : ""}`,
    onclick: (event) => { event.preventDefault(); openSource(citation.source, citation); },
  }, `[${citation.n}]`);
}

function showRagAnswer(box, body, answer) {
  if (answer.abstained) {
    body.textContent = answer.answer;
    return;
  }
  linkCitations(body, answer.answer, answer.citations);
  if (answer.citations.length) {
    box.append(el("ol", { class: "citations" }, ...answer.citations.map((c) =>
      el("li", {}, citeLink(c), ` ${shortName(c.source)}${c.page ? ` p.${c.page}` : ""} `,
        c.attributed ? el("span", { class: "muted" }, "(attributed) ") : null,
        c.supported ? null : el("span", { class: "warn" }, "(does not clearly support it) "),
        el("q", {}, c.quote)))));
  }
  const notes = [];
  if (answer.dropped_markers) notes.push(`${answer.dropped_markers} citation marker(s) pointed at no source and were dropped`);
  for (const sentence of answer.unsupported || []) notes.push(`unsupported: ${sentence}`);
  if (answer.passages_dropped) notes.push(`${answer.passages_dropped} retrieved passage(s) did not fit the context window`);
  if (notes.length) box.append(el("div", { class: "notes warn" }, notes.join(" · ")));
}

function labelUnsafe(box) {
  box.querySelector(".who").append(" ", el("span", { class: "unsafe",
    title: "the program ran without the sandbox's OS walls (sandbox_isolation unsafe)" },
  "unsafe"));
}

function showProgram(box, program) {
  if (program) {
    box.append(el("details", { class: "program", open: "" },
      el("summary", {}, "program"), el("pre", {}, el("code", {}, program))));
  }
}

// -- asking ----------------------------------------------------------------------------------

async function ask(text) {
  const mode = $("mode").value;
  addMessage("user", text);
  const { box, body } = addMessage("assistant", "");
  const controller = new AbortController();
  busy(controller);
  try {
    if (mode === "pal") {
      body.textContent = "writing and running a program…";
      const response = await call("POST", "/api/pal/ask",
        { question: text, session: state.session || undefined }, controller.signal);
      const result = await response.json();
      body.textContent = result.ok ? String(result.answer) : `no program succeeded: ${result.error}`;
      if (result.unsafe) labelUnsafe(box);
      showProgram(box, result.program);
      setSession(result.session);
      await loadSessions();
      return;
    }
    const response = await call("POST", "/api/chat",
      { message: text, session: state.session, rag: mode === "rag" }, controller.signal);
    for await (const { name, data } of events(response)) {
      if (name === "session") setSession(data.session);
      else if (name === "question" && data.rewritten) {
        box.append(el("div", { class: "notes" }, `searched for: ${data.question}`));
      } else if (name === "token") {
        body.append(data.text);
        box.scrollIntoView({ block: "end" });
      } else if (name === "reply") {
        if (data.answer && typeof data.answer === "object") showRagAnswer(box, body, data.answer);
        else body.textContent = data.answer;
        box.dataset.done = "1";
      } else if (name === "error") showProblem(box, new Problem(data.error, data.hint));
    }
    await loadSessions();
  } catch (problem) {
    if (mode === "pal") body.textContent = "";  // the "writing and running" placeholder goes
    if (problem.name === "AbortError") box.append(el("div", { class: "notes" }, "(stopped)"));
    else showProblem(box, problem);
  } finally {
    box.dataset.done = "1";
    busy(null);
  }
}

// Each mode says what it is for.
const PLACEHOLDERS = {
  rag: "Ask about your documents…",
  chat: "Chat with the model…",
  pal: "Ask something a program can work out (sums, dates, counting)…",
};

function showMode() {
  $("input").placeholder = `${PLACEHOLDERS[$("mode").value]} (Enter sends, Shift+Enter: new line)`;
}

function busy(controller) {
  state.busy = controller;
  $("send").disabled = Boolean(controller);
  $("stop").hidden = !controller;
}

// -- sessions --------------------------------------------------------------------------------

function setSession(name) {
  state.session = name;
  $("session-name").textContent = name ? `session ${name}` : "new session";
  $("session-name").title = $("session-name").textContent;
  for (const item of $("sessions").children) {
    item.classList.toggle("current", item.dataset.name === name);
  }
}

async function loadSessions() {
  const sessions = await (await call("GET", "/api/sessions")).json();
  $("sessions").replaceChildren(...sessions.map((s) => {
    const item = el("li", { "data-name": s.name },
      el("button", { class: "open", type: "button", title: s.first || s.name,
        onclick: () => openSession(s.name) }, s.first || s.name),
      el("button", { class: "delete", type: "button", "aria-label": `delete ${s.name}`,
        onclick: () => deleteSession(s.name) }, "×"));
    item.classList.toggle("current", s.name === state.session);
    return item;
  }));
}

async function openSession(name) {
  closeMenu();
  const detail = await (await call("GET", `/api/sessions/${encodeURIComponent(name)}`)).json();
  $("messages").replaceChildren();
  setSession(name);
  for (const message of detail.messages) {
    if (message.role === "system") continue;
    const { box, body } = addMessage(message.role, message.content);
    const meta = message.meta || {};
    if (meta.citations) showRagAnswer(box, body, { answer: message.content, citations: meta.citations });
    if (meta.pal && meta.pal.unsafe) labelUnsafe(box);
    if (meta.pal) showProgram(box, meta.pal.program);
  }
}

async function deleteSession(name) {
  if (!window.confirm(`Delete session ${name}?`)) return;
  await call("DELETE", `/api/sessions/${encodeURIComponent(name)}`);
  if (state.session === name) newChat();
  await loadSessions();
}

function newChat() {
  $("messages").replaceChildren();
  setSession(null);
  closeMenu();
}

// On a narrow screen the side panel is a drawer over the chat.
function closeMenu() {
  document.body.classList.remove("menu");
}

// -- sources ---------------------------------------------------------------------------------

function shortName(source) {
  return source.split("/").pop();
}

async function loadSources() {
  try {
    const list = await (await call("GET", "/api/sources")).json();
    $("sources").replaceChildren(...list.sources.map((s) => el("li", {},
      el("button", { class: "open", type: "button", title: s.source,
        onclick: () => openSource(s.source, null) }, shortName(s.source)))));
  } catch (problem) {
    $("sources").replaceChildren(el("li", { class: "muted" }, problem.message));
  }
}

// The document as the index holds it, with the cited slice highlighted by its offsets.
async function openSource(source, citation) {
  const url = `/api/sources/text?source=${encodeURIComponent(source)}`;
  const doc = await (await call("GET", url)).json();
  $("viewer-title").textContent = shortName(doc.source);
  const where = [doc.source, doc.kind];
  if (citation) {
    where.push(`[${citation.n}] characters ${citation.start}–${citation.end}`);
    if (citation.page) where.push(`page ${citation.page}`);
  }
  $("viewer-where").textContent = where.join(" · ");
  const text = $("viewer-text");
  if (!citation) {
    text.replaceChildren(doc.text);
  } else {
    const mark = el("mark", { id: "highlight" }, doc.text.slice(citation.start, citation.end));
    text.replaceChildren(doc.text.slice(0, citation.start), mark, doc.text.slice(citation.end));
  }
  closeMenu();
  document.body.classList.add("viewing");
  const mark = $("highlight");
  if (citation && mark) mark.scrollIntoView({ block: "center" });
  else $("viewer").scrollTop = 0;
}

// -- wiring ----------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", () => {
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.busy) return;
    $("input").value = "";
    ask(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault(); // isComposing: Enter that ends a Hangul syllable is not "send"
      $("ask").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.busy && state.busy.abort());
  $("new-chat").addEventListener("click", newChat);
  $("mode").addEventListener("change", showMode);
  showMode();
  $("menu").addEventListener("click", (event) => {
    event.stopPropagation();
    document.body.classList.toggle("menu");
  });
  document.querySelector("main").addEventListener("click", closeMenu);
  $("viewer-close").addEventListener("click", () => document.body.classList.remove("viewing"));
  loadSessions().catch((problem) => showProblem($("messages"), problem));
  call("GET", "/api/health").then((r) => r.json()).then((health) => {
    $("model").textContent = health.model || "";
    $("model").title = health.model || "";
    if (health.index_ready) {
      loadSources();
    } else {
      $("mode").value = "chat";
      showMode();
      $("sources").replaceChildren(el("li", { class: "muted" },
        `No index at ${health.index}: add documents with `,
        el("code", {}, "llamapipe rag ingest PATH")));
    }
  }).catch((problem) => showProblem($("messages"), problem));
});
