// The dashboard: upload form, live task table and task detail, all over the JSON API.
// Every API call goes through api(); every text from the server is inserted with textContent.
"use strict";

(() => {
  const POLL_MS = 1000;
  const TOKEN_KEY = "csvTasks.apiToken";
  const PAGE_SIZE = 25;
  const ENTRY_PAGE_SIZE = 20;
  // The buttons of a row; which are enabled comes from the task's `actions` (the server's state table).
  const ACTIONS = ["pause", "resume", "terminate"];
  const REASONS = {
    400: "Bad request", 401: "Not authorised", 403: "Forbidden", 404: "Not found",
    409: "Conflict", 413: "File too large", 415: "Unsupported file", 500: "Server error",
    503: "Service unavailable",
  };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat();

  function el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  }

  // ---------------------------------------------------------------- API transport

  class ApiError extends Error {
    constructor(status, message, cancelled = false) {
      super(message);
      this.status = status;
      this.cancelled = cancelled;
    }
  }

  /** One HTTP request with XMLHttpRequest (which, unlike fetch, reports upload progress). */
  function send(method, path, { body, onProgress, onXhr, responseType } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, path);
      xhr.setRequestHeader("Accept", "application/json");
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      let payload = body;
      if (body !== undefined && !(body instanceof FormData)) {
        xhr.setRequestHeader("Content-Type", "application/json");
        payload = JSON.stringify(body);
      }
      if (responseType) xhr.responseType = responseType;
      if (onProgress) {
        xhr.upload.addEventListener("progress", (e) => {
          if (e.lengthComputable) onProgress(e.loaded, e.total);
        });
      }
      xhr.addEventListener("load", () => resolve(xhr));
      xhr.addEventListener("error", () =>
        reject(new ApiError(0, "the connection to the server failed")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "cancelled", true)));
      if (onXhr) onXhr(xhr);
      xhr.send(payload);
    });
  }

  function errorMessage(xhr) {
    let message = "";
    if (xhr.responseType === "" || xhr.responseType === "text") {
      try {
        message = JSON.parse(xhr.responseText).error.message;
      } catch {
        message = "";
      }
    }
    const reason = REASONS[xhr.status] || xhr.statusText || "Error";
    return message ? `${message} (${xhr.status} ${reason})` : `${xhr.status} ${reason}`;
  }

  /** Call the API; on a 401 ask for a bearer token once and retry. Resolves to the JSON body. */
  async function api(method, path, options = {}) {
    let xhr = await send(method, path, options);
    if (xhr.status === 401 && (await askToken())) xhr = await send(method, path, options);
    if (xhr.status >= 400) throw new ApiError(xhr.status, errorMessage(xhr));
    if (options.responseType) return xhr.response;
    return xhr.responseText ? JSON.parse(xhr.responseText) : null;
  }

  // ---------------------------------------------------------------- dialogs

  /** Show a modal <dialog>; resolve true when it closes with its "ok" button. */
  function ask(dialog) {
    return new Promise((resolve) => {
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close("cancel"));
  }

  let tokenPrompt = null; // shared by requests that meet a 401 together
  let tokenDeclined = false; // after Cancel, polling does not ask again until the button is used

  function askToken() {
    if (tokenDeclined) return Promise.resolve(false);
    if (!tokenPrompt) {
      tokenPrompt = promptToken().finally(() => {
        tokenPrompt = null;
      });
    }
    return tokenPrompt;
  }

  async function promptToken() {
    const input = $("token-input");
    input.value = sessionStorage.getItem(TOKEN_KEY) || "";
    const ok = (await ask($("token-dialog"))) && input.value.trim() !== "";
    if (ok) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    tokenDeclined = !ok;
    return ok;
  }

  $("token-button").addEventListener("click", async () => {
    tokenDeclined = false;
    if (await askToken()) refreshTasks();
  });

  // ---------------------------------------------------------------- formatting

  const dash = "–";

  function parseTime(iso) {
    // The API speaks UTC; a timestamp without an offset is UTC too.
    return new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  }

  function formatTime(iso) {
    if (!iso) return dash;
    return parseTime(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  }

  function formatNumber(n) {
    return n === null || n === undefined ? dash : numberFormat.format(Math.round(n));
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) return dash;
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function formatBytes(n) {
    if (n === null || n === undefined) return dash;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // A whole number (never 100 before the end); a REVOKED task has no progress.
  const percent = (p) => (p === null || p === undefined ? "–" : `${Math.floor(p * 100)} %`);
  const taskUrl = (id) => `#/tasks/${encodeURIComponent(id)}`;
  const applies = (action, task) => (task.actions || []).includes(action);
  const canDownload = (task) => task.kind === "export" && task.status === "COMPLETED";

  // ---------------------------------------------------------------- upload form

  const fileInput = $("file");
  const dropZone = $("drop-zone");
  let uploadXhr = null;

  function showUploadMessage(text, kind) {
    const message = $("upload-message");
    message.textContent = text;
    message.className = `message ${kind}`;
  }

  function showFileChoice() {
    const file = fileInput.files[0];
    $("drop-hint").textContent = file
      ? `Selected: ${file.name} (${formatBytes(file.size)})`
      : "Choose a file, or drop it here.";
  }

  function showUploadProgress(loaded, total) {
    $("upload-bar").value = total ? loaded / total : 0;
    $("upload-percent").textContent = loaded < total
      ? `${percent(loaded / total)} of ${formatBytes(total)}`
      : "100 %: waiting for the server…";
  }

  function setUploading(busy) {
    $("upload-button").disabled = busy;
    $("upload-cancel").hidden = !busy;
    $("upload-form").setAttribute("aria-busy", String(busy));
    $("upload-progress").hidden = !busy;
    if (busy) showUploadProgress(0, 1);
    else uploadXhr = null;
  }

  function uploadFields(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("has_header", $("has_header").checked ? "true" : "false");
    form.append("delimiter", $("delimiter").value);
    const encoding = $("encoding").value.trim();
    if (encoding) form.append("encoding", encoding);
    const maxErrors = $("max_errors").value.trim();
    if (maxErrors) form.append("max_errors", maxErrors);
    return form;
  }

  async function upload(event) {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) {
      showUploadMessage("Choose a CSV file first.", "error");
      fileInput.focus();
      return;
    }
    showUploadMessage(`Uploading ${file.name}…`, "");
    setUploading(true);
    try {
      const task = await api("POST", "/", {
        body: uploadFields(file),
        onProgress: showUploadProgress,
        onXhr: (xhr) => {
          uploadXhr = xhr;
        },
      });
      showUploadMessage(`Uploaded ${file.name}: task ${task.id} is ${task.status}.`, "ok");
      fileInput.value = "";
      showFileChoice();
      refreshTasks();
    } catch (err) {
      if (err.cancelled) showUploadMessage("Upload cancelled.", "");
      else if (err.status === 0) showUploadMessage(`Upload of ${file.name} failed: ${err.message}.`, "error");
      else showUploadMessage(`Upload of ${file.name} refused: ${err.message}`, "error");
    } finally {
      setUploading(false);
    }
  }

  $("upload-form").addEventListener("submit", upload);
  $("upload-cancel").addEventListener("click", () => uploadXhr && uploadXhr.abort());
  fileInput.addEventListener("change", showFileChoice);

  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  dropZone.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dropZone.classList.add("dragging");
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (e) => {
    dropZone.classList.remove("dragging");
    if (!hasFiles(e)) return;
    e.preventDefault();
    fileInput.files = e.dataTransfer.files;
    showFileChoice();
  });
  // A file dropped beside the zone must not make the browser leave the page.
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (e) => hasFiles(e) && e.preventDefault());
  }

  // ---------------------------------------------------------------- task table

  const tbody = $("task-rows");
  const rows = new Map(); // task id -> row parts
  let taskLimit = PAGE_SIZE;

  function createRow(task) {
    const tr = el("tr");
    tr.dataset.id = task.id;
    const cell = (label, ...children) => {
      tr.append(el("td", { className: `col-${label.toLowerCase().replace(/\W/g, "")}` }, ...children));
      tr.lastChild.dataset.label = label;
      return tr.lastChild;
    };
    const row = {
      tr,
      link: el("a", { href: taskUrl(task.id) }),
      kind: el("span"),
      badge: el("span", { className: "badge" }),
      reason: el("span", { className: "reason" }),
      bar: el("progress", { max: 1, value: 0 }),
      pct: el("span", { className: "pct" }),
      rows: el("span"),
      errors: el("span"),
      rate: el("span"),
      eta: el("span"),
      created: el("time"),
      buttons: {},
      download: el("a", { href: `/tasks/${encodeURIComponent(task.id)}/download`, textContent: "Download" }),
    };
    cell("File", row.link);
    cell("Kind", row.kind);
    cell("Status", row.badge, row.reason);
    row.pct.setAttribute("aria-hidden", "true"); // the bar speaks it (aria-valuetext)
    cell("Progress", row.bar, row.pct);
    cell("Rows", row.rows);
    cell("Errors", row.errors);
    cell("Rows/s", row.rate);
    cell("ETA", row.eta);
    cell("Created", row.created);
    const actions = cell("Actions");
    for (const action of ACTIONS) {
      const button = el("button", { type: "button", textContent: action[0].toUpperCase() + action.slice(1) });
      button.dataset.action = action;
      if (action === "terminate") button.className = "danger";
      row.buttons[action] = button;
      actions.append(button);
    }
    row.download.setAttribute("download", "");
    actions.append(row.download);
    return row;
  }

  function updateRow(row, task) {
    const name = task.filename || `task ${task.id}`;
    row.task = task;
    row.link.textContent = name;
    row.kind.textContent = task.kind;
    row.badge.textContent = task.status;
    row.badge.className = `badge status-${String(task.status).toLowerCase()}`;
    row.reason.textContent = task.error || "";
    row.bar.value = task.progress || 0;
    row.bar.setAttribute("aria-label", `Progress of ${name}`);
    // Spoken as the whole percentage, once: not the raw fraction, not twice.
    row.bar.setAttribute("aria-valuetext", percent(task.progress));
    row.pct.textContent = percent(task.progress);
    row.rows.textContent = formatNumber(task.rows_imported);
    row.rate.textContent = formatNumber(task.rows_per_second);
    row.eta.textContent = formatDuration(task.eta_seconds);
    row.created.dateTime = task.created_at || "";
    row.created.textContent = formatTime(task.created_at);
    row.errors.replaceChildren(
      task.error_count
        ? el("a", { href: `${taskUrl(task.id)}/errors`, textContent: formatNumber(task.error_count) })
        : formatNumber(task.error_count),
    );
    for (const [action, button] of Object.entries(row.buttons)) {
      button.disabled = !applies(action, task) || button.dataset.busy === "1";
      button.setAttribute("aria-label", `${button.textContent} ${name}`);
    }
    row.download.hidden = !canDownload(task);
    row.download.setAttribute("aria-label", `Download ${name}`);
  }

  function renderTasks(tasks, next) {
    const seen = new Set();
    const changes = [];
    tasks.forEach((task, i) => {
      const key = String(task.id);
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = createRow(task);
        rows.set(key, row);
      } else if (row.task.status !== task.status) {
        changes.push(`${task.filename || `task ${task.id}`} is now ${task.status}`);
      }
      updateRow(row, task);
      // Move a row only when it is out of place, so a focused button keeps its focus.
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
      if (key === detailId) renderDetailFields({ header: detailTask?.header, ...task }); // lists carry no header
    });
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.tr.remove();
        rows.delete(key);
      }
    }
    if (changes.length) $("announce").textContent = `${changes.join("; ")}.`;
    $("no-tasks").hidden = tasks.length > 0;
    $("more-tasks").hidden = !next;
  }

  let pollTimer = 0;
  let polling = null;
  let pollAgain = false;

  async function loadTasks() {
    const query = new URLSearchParams({ limit: String(taskLimit) });
    const status = $("status-filter").value;
    if (status) query.set("status", status);
    try {
      const page = await api("GET", `/tasks?${query}`);
      renderTasks(page.tasks, page.next);
      $("poll-state").textContent = "";
    } catch (err) {
      $("poll-state").textContent = `Could not refresh: ${err.message}`;
    }
  }

  /** Reload the table now; at most one request in flight, then one per POLL_MS while visible. */
  function refreshTasks() {
    clearTimeout(pollTimer);
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = loadTasks().finally(() => {
      polling = null;
      if (pollAgain) {
        pollAgain = false;
        refreshTasks();
      } else if (!document.hidden) {
        pollTimer = setTimeout(refreshTasks, POLL_MS);
      }
    });
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(pollTimer);
    else refreshTasks();
  });
  $("status-filter").addEventListener("change", refreshTasks);
  $("more-tasks").addEventListener("click", () => {
    taskLimit = Math.min(taskLimit + PAGE_SIZE, 1000);
    refreshTasks();
  });

  async function confirmTerminate(task) {
    const name = task.filename || `task ${task.id}`;
    $("confirm-text").textContent = task.kind === "export"
      ? `Terminating ${name} stops it and deletes its file. This cannot be undone.`
      : `Terminating ${name} stops it and deletes every row it imported. This cannot be undone.`;
    return ask($("confirm-dialog"));
  }

  async function runAction(action, button) {
    const row = rows.get(button.closest("tr").dataset.id);
    if (action === "terminate" && !(await confirmTerminate(row.task))) return;
    $("action-message").textContent = "";
    button.dataset.busy = "1";
    button.disabled = true;
    try {
      const task = await api("POST", `/${action}/${encodeURIComponent(row.task.id)}`);
      if (task && task.id !== undefined) updateRow(row, task);
    } catch (err) {
      $("action-message").textContent = `Could not ${action} ${row.task.filename}: ${err.message}`;
    } finally {
      delete button.dataset.busy;
      refreshTasks();
    }
  }

  /** Downloads go through a signed link valid for a minute: the token never goes into a URL. */
  async function download(link) {
    const id = link.closest("tr").dataset.id;
    try {
      const { url } = await api("POST", `/tasks/${encodeURIComponent(id)}/download_link`);
      const save = el("a", { href: url });
      save.setAttribute("download", "");
      document.body.append(save);
      save.click();
      save.remove();
    } catch (err) {
      $("action-message").textContent = `Could not download: ${err.message}`;
    }
  }

  tbody.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button) {
      runAction(button.dataset.action, button);
      return;
    }
    const link = e.target.closest("a[download]");
    if (link) {
      e.preventDefault();
      download(link);
    }
  });

  // ---------------------------------------------------------------- task detail

  let detailId = null;
  let detailTask = null;
  let entryPages = []; // the paths of the pages seen so far, for "Previous page"
  let errorsNext = null;

  const FIELDS = [
    ["id", "Id"], ["kind", "Kind"], ["status", "Status"], ["filename", "File"],
    ["error", "Error"], ["progress", "Progress", percent],
    ["rows_imported", "Rows imported", formatNumber], ["error_count", "Row errors", formatNumber],
    ["last_row", "Last row", formatNumber], ["bytes_done", "Bytes done", formatBytes],
    ["bytes_total", "Bytes total", formatBytes], ["rows_per_second", "Rows/s", formatNumber],
    ["eta_seconds", "ETA", formatDuration], ["created_at", "Created", formatTime],
    ["started_at", "Started", formatTime], ["updated_at", "Updated", formatTime],
    ["finished_at", "Finished", formatTime],
  ];

  function fieldText(value) {
    if (value === null || value === undefined || value === "") return dash;
    if (Array.isArray(value)) return value.map(fieldText).join(", ");
    if (typeof value === "object") {
      return Object.entries(value).map(([key, v]) => `${key}: ${fieldText(v)}`).join("; ");
    }
    return String(value);
  }

  const fieldLabel = (key) => key[0].toUpperCase() + key.slice(1).replace(/_/g, " ");

  function renderDetailFields(task) {
    detailTask = task;
    const known = new Set(FIELDS.map(([key]) => key));
    const items = FIELDS.filter(([key]) => key in task);
    for (const key of Object.keys(task)) if (!known.has(key)) items.push([key, fieldLabel(key)]);
    $("detail-fields").replaceChildren(
      ...items.map(([key, label, format]) =>
        el("div", {},
          el("dt", { textContent: label }),
          el("dd", { textContent: format ? format(task[key]) : fieldText(task[key]) }))),
    );
    $("detail-heading").textContent = `Task ${task.id}: ${task.filename || task.kind}`;
    $("detail-data").hidden = task.kind === "export";
    $("export-form").hidden = task.kind !== "import";
  }

  function renderErrors(page, append) {
    const trs = page.errors.map((err) =>
      el("tr", {},
        el("td", { textContent: fieldText(err.row_number) }),
        el("td", { textContent: fieldText(err.line_number) }),
        el("td", { textContent: fieldText(err.reason) }),
        el("td", {}, el("code", { textContent: fieldText(err.raw).replace(/\r?\n$/, "") }))));
    if (append) $("error-rows").append(...trs);
    else $("error-rows").replaceChildren(...trs);
    errorsNext = page.next;
    $("more-errors").hidden = !page.next;
    $("errors-empty").hidden = $("error-rows").children.length > 0;
  }

  async function loadErrors(path, append) {
    try {
      renderErrors(await api("GET", path), append);
    } catch (err) {
      $("errors-empty").hidden = false;
      $("errors-empty").textContent = `Could not load the row errors: ${err.message}`;
    }
  }

  function renderEntries(page) {
    // The JSON objects may come with sorted keys; the task's header gives the file's order.
    const columns = Array.isArray(detailTask?.header) ? [...detailTask.header] : [];
    for (const entry of page.entries) {
      for (const key of Object.keys(entry.data || {})) if (!columns.includes(key)) columns.push(key);
    }
    $("entry-head").replaceChildren(
      el("tr", {}, ...["row", ...columns].map((name) => el("th", { scope: "col", textContent: name }))));
    $("entry-rows").replaceChildren(
      ...page.entries.map((entry) =>
        el("tr", {},
          el("td", { textContent: fieldText(entry.row_number) }),
          ...columns.map((name) => el("td", { textContent: fieldText((entry.data || {})[name]) })))));
    const first = page.entries[0];
    const last = page.entries[page.entries.length - 1];
    $("entries-page").textContent = first
      ? `Page ${entryPages.length}: rows ${formatNumber(first.row_number)}–${formatNumber(last.row_number)}`
      : `Page ${entryPages.length}`;
    $("entries-empty").hidden = page.entries.length > 0 || entryPages.length > 1;
    $("entries-next").disabled = !page.next;
    $("entries-next").dataset.path = page.next || "";
    $("entries-prev").disabled = entryPages.length < 2;
    $("entries-first").disabled = entryPages.length < 2;
  }

  async function loadEntries(path) {
    try {
      const page = await api("GET", path);
      entryPages.push(path);
      renderEntries(page);
    } catch (err) {
      $("entries-page").textContent = `Could not load the rows: ${err.message}`;
    }
  }

  $("entries-next").addEventListener("click", (e) => loadEntries(e.target.dataset.path));
  $("entries-prev").addEventListener("click", () => {
    entryPages.pop();
    loadEntries(entryPages.pop());
  });
  $("entries-first").addEventListener("click", () => {
    const first = entryPages[0];
    entryPages = [];
    loadEntries(first);
  });
  $("more-errors").addEventListener("click", () => errorsNext && loadErrors(errorsNext, true));

  async function openDetail(id, section) {
    detailId = id;
    const detail = $("detail");
    detail.hidden = false;
    $("detail-fields").replaceChildren();
    $("error-rows").replaceChildren();
    $("entry-head").replaceChildren();
    $("entry-rows").replaceChildren();
    $("export-message").textContent = "";
    $("errors-empty").textContent = "No row errors.";
    const path = `/tasks/${encodeURIComponent(id)}`;
    let task;
    try {
      task = await api("GET", path);
    } catch (err) {
      $("detail-heading").textContent = `Task ${id}: ${err.message}`;
      $("detail-data").hidden = true;
      $("export-form").hidden = true;
      $("detail-heading").focus();
      return;
    }
    if (detailId !== id) return;
    renderDetailFields(task);
    (section === "errors" ? $("errors-heading") : $("detail-heading")).focus();
    if (task.kind === "export") return;
    entryPages = [];
    const query = new URLSearchParams({ task_id: id, limit: String(ENTRY_PAGE_SIZE) });
    await Promise.all([
      loadErrors(`${path}/errors?limit=50`, false),
      loadEntries(`/csv_entries?${query}`),
    ]);
  }

  function closeDetail() {
    detailId = null;
    detailTask = null;
    $("detail").hidden = true;
  }

  function route() {
    const match = /^#\/tasks\/([^/]+)(?:\/(errors))?$/.exec(location.hash);
    if (match) openDetail(decodeURIComponent(match[1]), match[2]);
    else closeDetail();
  }

  $("detail-close").addEventListener("click", (e) => {
    e.preventDefault();
    const id = detailId;
    history.pushState(null, "", location.pathname + location.search);
    closeDetail();
    const row = id && rows.get(id);
    if (row) row.link.focus();
  });

  /** An export form: `prefix`-column/-from/-to, optionally limited to one import. */
  function exportForm(prefix, taskId) {
    $(`${prefix}-form`).addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {};
      const id = taskId();
      if (id !== null) body.task_id = id;
      for (const key of ["column", "from", "to"]) {
        const value = $(`${prefix}-${key}`).value.trim();
        if (value) body[key] = value;
      }
      const message = $(`${prefix}-message`);
      try {
        const task = await api("POST", "/exports", { body });
        message.className = "message ok";
        message.textContent = `Export started: task ${task.id} is ${task.status}.`;
        refreshTasks();
      } catch (err) {
        message.className = "message error";
        message.textContent = `Export refused: ${err.message}`;
      }
    });
  }
  exportForm("export", () => detailTask.id);
  exportForm("export-all", () => null);

  window.addEventListener("hashchange", route);
  route();
  refreshTasks();
})();
