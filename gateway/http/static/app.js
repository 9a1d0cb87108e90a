/* Opt-out console: a small single-page app over the sidecar's /api/v1.
 *
 * No framework and no build step: the sidecar serves this file as it is, to
 * operators who may be behind firewalls. Every piece of data is put into
 * the page with textContent (never innerHTML), so numbers, descriptions and
 * MO texts cannot inject markup. The API token lives in sessionStorage: it
 * is gone when the tab closes.
 */
"use strict";

(() => {
  const TOKEN_KEY = "optout.token";
  const UTC_KEY = "optout.utc"; // a display preference, kept across sessions
  const SMS_TYPES = ["marketing", "notification", "verification"];
  const REPLY_KINDS = [
    ["opt_out", "Opt-out confirmation", "Sent once when someone texts STOP."],
    ["opt_in", "Opt-in confirmation", "Sent when someone texts START."],
    ["help", "Help reply", "Sent when someone texts HELP: name the program and how to reach you."],
  ];
  const PAGE_SIZE = 50;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    utc: localStorage.getItem(UTC_KEY) === "1",
    generation: 0, // bumps on every navigation; stale async views do not render
  };

  // --- DOM helpers -----------------------------------------------------------

  /** Build an element: h("a", {href: "#"}, "text", child, [more]). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  let idCounter = 0;
  const uid = (prefix) => `${prefix}-${++idCounter}`;

  /** A labelled form field; returns {wrap, input}. */
  function field(label, input, hint) {
    input.id = input.id || uid("f");
    const hintEl = hint ? h("span", { class: "hint", id: uid("hint") }, hint) : null;
    if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
    const wrap = h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl);
    return { wrap, input };
  }

  function errorSlot() {
    return h("p", { class: "form-error", role: "alert", hidden: true });
  }

  function showError(slot, err) {
    slot.textContent = err ? describe(err) : "";
    slot.hidden = !err;
  }

  function describe(err) {
    if (err instanceof ApiError) return err.message + (err.code ? ` (${err.code})` : "");
    return String(err && err.message ? err.message : err);
  }

  /** Run `action` for a form: disable its buttons, show errors inline. */
  async function busy(form, slot, action) {
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => (b.disabled = true));
    showError(slot, null);
    try {
      await action();
    } catch (err) {
      showError(slot, err);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  let toastTimer = null;
  function clearToast() {
    clearTimeout(toastTimer);
    const el = document.getElementById("toast");
    el.textContent = "";
    el.hidden = true;
  }

  function toast(message) {
    const el = document.getElementById("toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (el.hidden = true), 4000);
  }

  function confirmDialog(title, text, okLabel) {
    const dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel;
    document.getElementById("confirm-extra").replaceChildren();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  /** A modal form: resolves to {name: value} on OK, null on cancel.
   * `fields`: [{name, label, hint, multiline, required, mustEqual}]; OK
   * stays disabled until every required field is filled and every
   * `mustEqual` field holds exactly that text. */
  function formDialog({ title, text, fields, okLabel, danger }) {
    const inputs = fields.map((f) => {
      const input = f.multiline
        ? h("textarea", { rows: 3, maxlength: 500, name: f.name, class: "plain" })
        : h("input", { name: f.name, autocomplete: "off", spellcheck: "false" });
      if (f.required) input.required = true;
      return [f, input];
    });
    const ok = h("button", { value: "ok", class: danger ? "danger" : "" }, okLabel);
    const titleEl = h("h2", { id: uid("dlg") }, title);
    const dialog = h(
      "dialog",
      { "aria-labelledby": titleEl.id, class: "form-dialog" },
      h(
        "form",
        { method: "dialog" },
        titleEl,
        (Array.isArray(text) ? text : [text]).map((t) => h("p", {}, t)),
        h("div", { class: "stack" }, inputs.map(([f, input]) => field(f.label, input, f.hint).wrap)),
        h(
          "div",
          { class: "actions" },
          h("button", { value: "cancel", class: "secondary", formnovalidate: true }, "Cancel"),
          ok,
        ),
      ),
    );
    const sync = () => {
      ok.disabled = inputs.some(
        ([f, input]) =>
          (f.required && !input.value.trim()) ||
          (f.mustEqual !== undefined && input.value.trim() !== f.mustEqual),
      );
    };
    inputs.forEach(([, input]) => input.addEventListener("input", sync));
    sync();
    document.body.append(dialog);
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          const values = {};
          for (const [f, input] of inputs) values[f.name] = input.value.trim();
          dialog.remove();
          resolve(dialog.returnValue === "ok" ? values : null);
        },
        { once: true },
      );
      dialog.showModal();
      if (inputs.length) inputs[0][1].focus();
    });
  }

  const pad = (n) => String(n).padStart(2, "0");

  /** The browser's zone as people read it ("GMT-5", "CET"), for a date. */
  function zoneName(d) {
    const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
      .formatToParts(d)
      .find((p) => p.type === "timeZoneName");
    return part ? part.value : "local time";
  }

  /** The zone times are shown in now, for labels ("UTC" or "GMT-5"). */
  const displayZone = () => (state.utc ? "UTC" : zoneName(new Date()));

  /** An API time (ISO-8601 UTC) in a <time> that always names its zone.
   * In UTC mode the text is the API's string itself, exactly as the CSV
   * export writes it, so a row can be found in the file by its time. */
  function timeEl(iso) {
    if (!iso) return h("span", { class: "muted" }, "—");
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return h("time", {}, String(iso));
    if (state.utc) return h("time", { datetime: iso, title: "UTC, as in the CSV export" }, iso);
    const local =
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneName(d)}`;
    return h("time", { datetime: iso, title: `${iso} in the CSV export (UTC)` }, local);
  }

  function typeBadges(types) {
    if (!types.length) return h("span", { class: "muted" }, "nothing");
    return types.map((t) => h("span", { class: `badge type-${t}` }, t));
  }

  const isAdmin = () => state.me && state.me.role === "admin";
  const VIEWER_HINT = "Read-only: your token has the viewer role.";

  /** Tells a viewer why there is nothing to click. */
  function readOnlyNote() {
    return isAdmin()
      ? null
      : h("p", { class: "note" }, "Read-only: your token has the viewer role.");
  }

  // --- API -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const enc = encodeURIComponent;

  async function request(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}`, "X-Optout-Client": "console" };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(`/api/v1${path}`, init);
    } catch (err) {
      throw new ApiError(0, "network", `Cannot reach the sidecar (${err.message}).`);
    }
    if (!resp.ok) {
      let code = `http_${resp.status}`;
      let message = resp.statusText || "Request failed";
      try {
        const data = await resp.json();
        code = data.error.code;
        message = data.error.message;
      } catch (_) {
        /* not our JSON error shape: keep the status text */
      }
      if (resp.status === 401 && state.me) {
        signOut("Your token is no longer accepted. Sign in again.");
      }
      throw new ApiError(resp.status, code, message);
    }
    return resp;
  }

  async function api(method, path, body) {
    const resp = await request(method, path, body);
    return resp.status === 204 ? null : resp.json();
  }

  function queryString(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  // --- chrome, sign-in, routing -------------------------------------------------

  function main() {
    return document.getElementById("main");
  }

  function showChrome() {
    const signedIn = !!state.me;
    document.getElementById("nav").hidden = !signedIn;
    document.getElementById("who").hidden = !signedIn;
    if (signedIn) {
      document.getElementById("who-name").textContent = state.me.name;
      const role = document.getElementById("who-role");
      role.textContent = state.me.role;
      role.className = `badge role-${state.me.role}`;
    }
  }

  function signOut(message) {
    // Toasts name numbers and addresses: none may outlive the session.
    clearToast();
    document.querySelectorAll("dialog[open]").forEach((d) => d.close());
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    showChrome();
    viewSignIn(message);
  }

  function viewSignIn(message) {
    state.generation++;
    const slot = errorSlot();
    const token = h("input", {
      type: "password",
      name: "token",
      autocomplete: "current-password",
      required: true,
      spellcheck: "false",
    });
    const form = h(
      "form",
      { class: "stack" },
      field("API token", token, "A token from the sidecar's [[http.tokens]] configuration.").wrap,
      h("button", { type: "submit" }, "Sign in"),
      slot,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        state.token = token.value.trim();
        try {
          state.me = await api("GET", "/whoami");
        } catch (err) {
          state.token = null;
          if (err.status === 401) throw new Error("That token was not accepted.");
          throw err;
        }
        sessionStorage.setItem(TOKEN_KEY, state.token);
        showChrome();
        if (!location.hash || location.hash === "#/") location.hash = "#/overview";
        else route();
      });
    });
    if (message) showError(slot, new Error(message));
    main().replaceChildren(
      h(
        "section",
        { class: "card signin", "aria-labelledby": "signin-title" },
        h("h1", { id: "signin-title" }, "Sign in"),
        h(
          "p",
          { class: "muted" },
          "Manage inbound addresses, keywords, blocking rules and unsubscribed users.",
        ),
        form,
      ),
    );
    token.focus();
  }

  const ROUTES = [
    [/^#\/overview\/?$/, () => viewOverview()],
    [/^#\/inbound(?:\?(.*))?$/, (m) => viewInbound(new URLSearchParams(m[1] || ""))],
    [/^#\/audit(?:\?(.*))?$/, (m) => viewAudit(new URLSearchParams(m[1] || ""))],
    [/^#\/addresses\/?$/, () => viewAddresses()],
    [/^#\/addresses\/([^/?]+)$/, (m) => viewAddress(decodeURIComponent(m[1]))],
    [/^#\/unsubscribed(?:\?(.*))?$/, (m) => viewUnsubscribed(new URLSearchParams(m[1] || ""))],
    [/^#\/records(?:\?(.*))?$/, (m) => viewRecords(new URLSearchParams(m[1] || ""))],
  ];

  async function route() {
    const generation = ++state.generation;
    if (!state.token) return viewSignIn();
    if (!state.me) {
      try {
        state.me = await api("GET", "/whoami");
      } catch (err) {
        return signOut(err.status === 401 ? "That token is no longer accepted." : describe(err));
      }
      showChrome();
    }
    const hash = location.hash || "#/overview";
    for (const [pattern, view] of ROUTES) {
      const m = hash.match(pattern);
      if (!m) continue;
      for (const a of document.querySelectorAll("#nav a")) {
        const current = new RegExp(`^#/${a.dataset.nav}(?:[/?]|$)`).test(hash);
        if (current) a.setAttribute("aria-current", "page");
        else a.removeAttribute("aria-current");
      }
      main().replaceChildren(h("p", { class: "loading", role: "status" }, "Loading…"));
      let node;
      try {
        node = await view(m);
      } catch (err) {
        node = h(
          "section",
          { class: "card" },
          h("h1", {}, err.status === 404 ? "Not found" : "Something went wrong"),
          h("p", { class: "form-error", role: "alert" }, describe(err)),
          h("p", {}, h("a", { href: "#/overview" }, "Back to the overview")),
        );
      }
      if (generation !== state.generation) return; // the user moved on meanwhile
      main().replaceChildren(node);
      const heading = main().querySelector("h1");
      if (heading) document.title = `${heading.textContent} · Opt-out console`;
      return;
    }
    location.hash = "#/overview";
  }

  function refresh() {
    return route();
  }

  // --- inbound addresses ------------------------------------------------------------

  async function viewAddresses() {
    const { items } = await api("GET", "/inbound-addresses");
    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, "Inbound addresses"),
        h(
          "p",
          { class: "muted" },
          "Numbers and short codes that receive STOP, START and HELP from end users.",
        ),
        readOnlyNote(),
      ),
      isAdmin() ? addAddressForm() : null,
      h(
        "section",
        { class: "card", "aria-labelledby": "addr-list-title" },
        h("h2", { id: "addr-list-title" }, `All addresses (${items.length})`),
        items.length
          ? addressTable(items)
          : h("p", { class: "empty" }, "No inbound addresses yet."),
      ),
    );
  }

  function addAddressForm() {
    const slot = errorSlot();
    const address = h("input", {
      name: "address",
      required: true,
      placeholder: "+1 415 555 0100 or 55555",
      autocomplete: "off",
    });
    const description = h("input", { name: "description", maxlength: 500, autocomplete: "off" });
    const form = h(
      "form",
      { class: "row-form" },
      field("Address", address).wrap,
      field("Description", description).wrap,
      h("button", { type: "submit" }, "Add address"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        const created = await api("POST", "/inbound-addresses", {
          address: address.value,
          description: description.value,
        });
        toast(`Added ${created.address}.`);
        await refresh();
      });
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "add-addr-title" },
      h("h2", { id: "add-addr-title" }, "Add an inbound address"),
      form,
      slot,
    );
  }

  function addressTable(items) {
    const rows = items.map((a) => {
      const slot = errorSlot();
      const descCell = h("td", {}, a.description || h("span", { class: "muted" }, "—"));
      const actions = h("td", { class: "actions" });
      if (isAdmin()) {
        const edit = h("button", {
          type: "button",
          class: "secondary small",
          "aria-label": `Edit description of ${a.address}`,
          text: "Edit",
        });
        const del = h("button", {
          type: "button",
          class: "danger small",
          "aria-label": `Delete ${a.address}`,
          text: "Delete",
        });
        edit.addEventListener("click", () => editDescription(a, descCell, slot));
        del.addEventListener("click", () => act(slot, () => deleteAddress(a.address)));
        actions.append(edit, del);
      }
      actions.append(slot);
      return h(
        "tr",
        {},
        h(
          "th",
          { scope: "row" },
          h("a", { href: `#/addresses/${enc(a.address)}`, class: "mono" }, a.address),
        ),
        descCell,
        h("td", { class: "num" }, String(a.rules.length)),
        h("td", {}, typeBadges(a.default_rule.sms_types)),
        h("td", {}, timeEl(a.created_at)),
        isAdmin() ? actions : null,
      );
    });
    return table(
      ["Address", "Description", "#App rules", "Default rule blocks", "Added", ...(isAdmin() ? ["Actions"] : [])],
      rows,
      "Inbound addresses",
    );
  }

  /** How many numbers are unsubscribed at `address` now: from the
   * overview's totals, else by paging the list. */
  async function unsubscribedAt(address) {
    try {
      const stats = await api("GET", "/stats");
      const found = byAddressCounts(stats).find(([addr]) => addr === address);
      return found ? found[1] : 0;
    } catch (err) {
      if (err.status === 401) throw err;
    }
    let count = 0;
    let cursor = null;
    do {
      const page = await api(
        "GET",
        `/unsubscribed${queryString({ inbound_address: address, limit: 1000, cursor })}`,
      );
      count += page.items.length;
      cursor = page.next_cursor;
    } while (cursor);
    return count;
  }

  /** Deleting an address releases its opt-outs: say how many, and make the
   * admin type the address before the (forced) delete is sent. */
  async function deleteAddress(address) {
    const count = await unsubscribedAt(address);
    const released =
      count === 0
        ? "No number is unsubscribed at this address."
        : `${count} unsubscribed ${count === 1 ? "number" : "numbers"} will be released: ` +
          "messages blocked because of this address will reach them again. " +
          "Each release is recorded.";
    const values = await formDialog({
      title: `Delete ${address}?`,
      text: [released, "Its keywords, rules and replies are removed. The history records stay."],
      fields: [{ name: "confirm", label: `Type ${address} to confirm`, mustEqual: address }],
      okLabel: "Delete address",
      danger: true,
    });
    if (!values) return;
    await api("DELETE", `/inbound-addresses/${enc(address)}?force=true`);
    toast(`Deleted ${address}${count ? `; released ${count}` : ""}.`);
    if (location.hash !== "#/addresses") location.hash = "#/addresses";
    else await refresh();
  }

  function editDescription(a, cell, slot) {
    const input = h("input", {
      value: a.description,
      maxlength: 500,
      "aria-label": `New description for ${a.address}`,
    });
    const form = h(
      "form",
      { class: "inline-edit" },
      input,
      h("button", { type: "submit", class: "small" }, "Save"),
      h(
        "button",
        { type: "button", class: "secondary small", onclick: () => refresh() },
        "Cancel",
      ),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        await api("PATCH", `/inbound-addresses/${enc(a.address)}`, { description: input.value });
        toast(`Saved the description of ${a.address}.`);
        await refresh();
      });
    });
    cell.replaceChildren(form);
    input.focus();
  }

  /** A table; a header written "#Label" is a right-aligned number column,
   * a header {label, node, sort} a column with its own header content.
   * Every cell learns its column's label, which the narrow-screen layout
   * shows next to the value (each row becomes a card). */
  function table(headers, rows, caption, className, compact) {
    const labels = headers.map((t) => (typeof t === "string" ? t.replace(/^#/, "") : t.label));
    for (const row of rows) {
      [...row.children].forEach((cell, i) => {
        if (labels[i] && !cell.dataset.label) cell.dataset.label = labels[i];
      });
    }
    return h(
      "div",
      { class: compact ? "table-wrap compact" : "table-wrap" },
      h(
        "table",
        { class: className },
        caption ? h("caption", { class: "visually-hidden" }, caption) : null,
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            headers.map((t) =>
              typeof t !== "string"
                ? h("th", { scope: "col", "aria-sort": t.sort || null }, t.node)
                : t.startsWith("#")
                  ? h("th", { scope: "col", class: "num" }, t.slice(1))
                  : h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h("tbody", {}, rows),
      ),
    );
  }

  // --- one address ---------------------------------------------------------------------

  /** The address's warnings (`warnings` in its API representation):
   * settings that are allowed but weaken opt-out handling. */
  function warningsBox(a) {
    const box = h("div", { class: "warnings-slot" });
    renderWarnings(box, a.warnings || []);
    return box;
  }

  function renderWarnings(box, warnings) {
    const text = (w) => (typeof w === "string" ? w : w.message || w.code || JSON.stringify(w));
    box.replaceChildren(
      ...(warnings.length
        ? [h(
            "section",
            { class: "warning-banner", "aria-labelledby": "warn-title" },
            h(
              "h2",
              { id: "warn-title" },
              warnings.length === 1 ? "1 warning" : `${warnings.length} warnings`,
            ),
            h("ul", {}, warnings.map((w) => h("li", {}, text(w)))),
          )]
        : []),
    );
  }

  /** After a save that may change them, show the address's warnings again. */
  async function reloadWarnings(address) {
    const box = main().querySelector(".warnings-slot");
    if (!box) return;
    const a = await api("GET", `/inbound-addresses/${enc(address)}`);
    renderWarnings(box, a.warnings || []);
  }

  async function viewAddress(raw) {
    const [a, appIds] = await Promise.all([
      api("GET", `/inbound-addresses/${enc(raw)}`),
      configuredAppIds(),
    ]);
    const slot = errorSlot();
    const del = isAdmin()
      ? h("button", {
          type: "button",
          class: "danger",
          text: "Delete address",
          onclick: () => act(slot, () => deleteAddress(a.address)),
        })
      : null;
    return h(
      "div",
      { class: "page" },
      h(
        "nav",
        { class: "breadcrumb", "aria-label": "Breadcrumb" },
        h("a", { href: "#/addresses" }, "Inbound addresses"),
        " / ",
        h("span", { "aria-current": "page" }, a.address),
      ),
      h(
        "div",
        { class: "page-head with-action" },
        h(
          "div",
          {},
          h("h1", { class: "mono" }, a.address),
          h("p", { class: "muted" }, a.description || "No description."),
          readOnlyNote(),
        ),
        del ? h("div", { class: "head-action" }, del, slot) : null,
      ),
      warningsBox(a),
      h(
        "div",
        { class: "page-links" },
        h(
          "p",
          {},
          h(
            "a",
            { href: `#/unsubscribed${queryString({ inbound_address: a.address })}` },
            "Unsubscribed users at this address",
          ),
          " · ",
          h(
            "a",
            { href: `#/records${queryString({ inbound_address: a.address })}` },
            "History",
          ),
          " · ",
          h(
            "a",
            { href: `#/inbound${queryString({ inbound_address: a.address })}` },
            "Inbound messages",
          ),
        ),
      ),
      rulesCard(a, appIds),
      h("div", { class: "two-col" }, keywordsCard(a), repliesCard(a)),
      nearMissCard(a),
    );
  }

  function typeChecks(selected, labelFor, disabled) {
    return SMS_TYPES.map((t) =>
      h("input", {
        type: "checkbox",
        value: t,
        checked: selected.includes(t),
        disabled,
        title: disabled ? VIEWER_HINT : null,
        "aria-label": labelFor(t),
      }),
    );
  }

  const checkedTypes = (boxes) => boxes.filter((b) => b.checked).map((b) => b.value);

  function rulesCard(a, appIds) {
    const admin = isAdmin();
    const slot = errorSlot();
    const base = `/inbound-addresses/${enc(a.address)}`;

    const ruleRows = a.rules.map((r) => {
      const boxes = typeChecks(r.sms_types, (t) => `Block ${t} for app ${r.app_id}`, !admin);
      const actions = h("td", { class: "actions" });
      if (admin) {
        actions.append(
          h("button", {
            type: "button",
            class: "small",
            text: "Save",
            "aria-label": `Save rule for app ${r.app_id}`,
            onclick: () =>
              act(slot, async () => {
                await api("PUT", `${base}/blocking-rules/${enc(r.app_id)}`, {
                  sms_types: checkedTypes(boxes),
                });
                toast(`Saved the rule for app ${r.app_id}.`);
                await reloadWarnings(a.address);
              }),
          }),
          h("button", {
            type: "button",
            class: "danger small",
            text: "Delete",
            "aria-label": `Delete rule for app ${r.app_id}`,
            onclick: async () => {
              const ok = await confirmDialog(
                `Delete the rule for app ${r.app_id}?`,
                "The default rule of this address applies to the app again.",
                "Delete rule",
              );
              if (!ok) return;
              await act(slot, async () => {
                await api("DELETE", `${base}/blocking-rules/${enc(r.app_id)}`);
                toast(`Deleted the rule for app ${r.app_id}.`);
                await refresh();
              });
            },
          }),
        );
      }
      return h(
        "tr",
        {},
        h("th", { scope: "row", class: "mono" }, r.app_id),
        boxes.map((b) => h("td", { class: "check" }, b)),
        admin ? actions : null,
      );
    });

    const defaultBoxes = typeChecks(
      a.default_rule.sms_types,
      (t) => `Block ${t} for other apps`,
      !admin,
    );
    const saveDefault = admin
      ? h(
          "td",
          { class: "actions" },
          h("button", {
            type: "button",
            class: "small",
            text: "Save",
            "aria-label": "Save default rule",
            onclick: () =>
              act(slot, async () => {
                await api("PUT", `${base}/default-rule`, { sms_types: checkedTypes(defaultBoxes) });
                toast("Saved the default rule.");
                await reloadWarnings(a.address);
              }),
          }),
        )
      : null;
    const defaultRow = h(
      "tr",
      { class: "default-row" },
      h("th", { scope: "row" }, "Every other app ", h("span", { class: "muted" }, "(default rule)")),
      defaultBoxes.map((b) => h("td", { class: "check" }, b)),
      saveDefault,
    );

    const card = h(
      "section",
      { class: "card", "aria-labelledby": "rules-title" },
      h("h2", { id: "rules-title" }, "Blocking rules"),
      h(
        "p",
        { class: "muted" },
        "What each application may not send to numbers unsubscribed at this address. " +
          "Checked types are blocked.",
      ),
      table(
        ["Application ID", "Marketing", "Notification", "Verification", ...(admin ? ["Actions"] : [])],
        [...ruleRows, defaultRow],
        "Blocking rules",
        "rules",
      ),
      slot,
    );
    if (admin) card.append(addRuleForm(base, appIds));
    return card;
  }

  async function act(slot, action) {
    showError(slot, null);
    try {
      await action();
    } catch (err) {
      showError(slot, err);
    }
  }

  function addRuleForm(base, appIds) {
    const slot = errorSlot();
    const list = h(
      "datalist",
      { id: uid("apps") },
      appIds.map((id) => h("option", { value: id })),
    );
    const appId = h("input", {
      name: "app_id",
      required: true,
      autocomplete: "off",
      list: list.id,
    });
    const boxes = SMS_TYPES.map((t) => h("input", { type: "checkbox", value: t, id: uid("t") }));
    const form = h(
      "form",
      { class: "row-form" },
      field(
        "App ID",
        appId,
        appIds.length ? "Pick a configured account's app ID, or type another." : null,
      ).wrap,
      list,
      h(
        "fieldset",
        { class: "checks" },
        h("legend", {}, "Block"),
        boxes.map((b) =>
          h("label", { for: b.id, class: "check-label" }, b, b.value[0].toUpperCase() + b.value.slice(1)),
        ),
      ),
      h("button", { type: "submit" }, "Add rule"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        await api("POST", `${base}/blocking-rules`, {
          app_id: appId.value.trim(),
          sms_types: checkedTypes(boxes),
        });
        toast(`Added a rule for app ${appId.value.trim()}.`);
        await refresh();
      });
    });
    return h(
      "div",
      { class: "subform" },
      h("h3", {}, "Add a rule for an application"),
      form,
      slot,
    );
  }

  function keywordsCard(a) {
    const admin = isAdmin();
    const slot = errorSlot();
    const lists = {};
    const fields = [
      ["opt_out", "Opt-out keywords"],
      ["opt_in", "Opt-in keywords"],
      ["help", "Help keywords"],
    ].map(([key, label]) => {
      lists[key] = h("textarea", {
        rows: 7,
        readonly: !admin,
        spellcheck: "false",
        title: admin ? null : VIEWER_HINT,
      });
      lists[key].value = a.keywords[key].join("\n");
      return field(label, lists[key], "One per line; case and punctuation do not matter.").wrap;
    });
    const modes = [
      ["leading", "Message starts with an opt-out keyword (“Stop texting me” opts out)"],
      ["exact", "Whole message is the keyword"],
    ].map(([value, label]) => {
      const radio = h("input", {
        type: "radio",
        name: "match",
        value,
        id: uid("m"),
        checked: a.keywords.match === value,
        disabled: !admin,
      });
      return h("label", { for: radio.id, class: "check-label" }, radio, label);
    });
    const form = h(
      "form",
      { class: "stack" },
      h("div", { class: "three" }, fields),
      h("fieldset", { class: "radios" }, h("legend", {}, "Opt-out matching"), modes),
      admin ? h("button", { type: "submit" }, "Save keywords") : null,
      slot,
    );
    // Shown when the API refuses a list without the words the FCC and CTIA
    // expect (422 noncompliant_keywords): saving anyway is a deliberate,
    // audited choice, never a retry that happens by itself.
    const override = h("div", { class: "override", hidden: true });
    form.append(override);
    const lines = (key) =>
      lists[key].value
        .split("\n")
        .map((s) => s.trim())
        .filter(Boolean);
    const save = (allowNoncompliant) =>
      busy(form, slot, async () => {
        override.hidden = true;
        const body = {
          opt_out: lines("opt_out"),
          opt_in: lines("opt_in"),
          help: lines("help"),
          match: form.querySelector("input[name=match]:checked").value,
        };
        if (allowNoncompliant) body.allow_noncompliant = true;
        try {
          await api("PUT", `/inbound-addresses/${enc(a.address)}/keywords`, body);
        } catch (err) {
          if (err.code === "noncompliant_keywords") {
            override.replaceChildren(
              h(
                "p",
                {},
                "End users may text any of these words to revoke consent. Saving without " +
                  "them is allowed, and recorded in the audit log with your name.",
              ),
              h("button", {
                type: "button",
                class: "danger",
                text: "Save anyway",
                onclick: () => save(true),
              }),
            );
            override.hidden = false;
          }
          throw err;
        }
        toast(
          allowNoncompliant
            ? "Saved the keywords without the required opt-out words (audited)."
            : "Saved the keywords.",
        );
        await reloadWarnings(a.address);
      });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      save(false);
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "kw-title" },
      h("h2", { id: "kw-title" }, "Keywords"),
      form,
    );
  }

  /** Extra phrases that flag a message for review at this address, on top
   * of the built-in English, French and Spanish list. */
  function nearMissCard(a) {
    const admin = isAdmin();
    const slot = errorSlot();
    const text = h("textarea", {
      rows: 4,
      readonly: !admin,
      spellcheck: "false",
      title: admin ? null : VIEWER_HINT,
    });
    text.value = (a.near_miss_phrases || []).join("\n");
    const form = h(
      "form",
      { class: "stack" },
      field(
        "Extra near-miss phrases",
        text,
        "One per line, e.g. “quit messaging”. A message containing one, and no keyword, " +
          "goes to the review queue; nobody is unsubscribed by the flag alone.",
      ).wrap,
      admin ? h("button", { type: "submit" }, "Save phrases") : null,
      slot,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        const phrases = text.value
          .split("\n")
          .map((x) => x.trim())
          .filter(Boolean);
        await api("PUT", `/inbound-addresses/${enc(a.address)}/near-miss-phrases`, { phrases });
        toast("Saved the near-miss phrases.");
      });
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "nm-title" },
      h("h2", { id: "nm-title" }, "Near-miss review"),
      form,
    );
  }

  function repliesCard(a) {
    const admin = isAdmin();
    const slot = errorSlot();
    const parts = {};
    const blocks = REPLY_KINDS.map(([key, label, hint]) => {
      const text = h("textarea", {
        rows: 3,
        maxlength: 1600,
        readonly: !admin,
        title: admin ? null : VIEWER_HINT,
      });
      text.value = a.replies[key] || "";
      const on = h("input", {
        type: "checkbox",
        id: uid("on"),
        checked: a.replies[key] !== null,
        disabled: !admin,
      });
      const sync = () => (text.disabled = !on.checked);
      on.addEventListener("change", sync);
      sync();
      parts[key] = { on, text, label };
      return h(
        "div",
        { class: "reply" },
        h("label", { for: on.id, class: "check-label strong" }, on, `Send ${label.toLowerCase()}`),
        field(`${label} text`, text, hint).wrap,
      );
    });
    const form = h(
      "form",
      { class: "stack" },
      blocks,
      admin ? h("button", { type: "submit" }, "Save replies") : null,
      slot,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        const body = {};
        for (const [key, { on, text, label }] of Object.entries(parts)) {
          if (on.checked && !text.value.trim()) {
            throw new Error(`Write the ${label.toLowerCase()} text, or switch it off.`);
          }
          body[key] = on.checked ? text.value : null;
        }
        await api("PUT", `/inbound-addresses/${enc(a.address)}/replies`, body);
        toast("Saved the replies.");
        await reloadWarnings(a.address);
      });
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "replies-title" },
      h("h2", { id: "replies-title" }, "Auto-replies"),
      form,
    );
  }

  // --- paged lists (unsubscribed users, records) -------------------------------------

  /** A table fed page by page through the API's cursors. */
  function pager(fetchPage, renderRows, headers, caption, emptyText) {
    const holder = h("div", { class: "pager-body" });
    const status = h("span", { class: "muted", "aria-live": "polite" });
    const prev = h("button", { type: "button", class: "secondary small" }, "Previous page");
    const next = h("button", { type: "button", class: "secondary small" }, "Next page");
    const slot = errorSlot();
    const cursors = [null]; // cursor of each page seen so far
    let page = 0;
    let nextCursor = null;

    async function load() {
      showError(slot, null);
      prev.disabled = next.disabled = true;
      try {
        const data = await fetchPage(cursors[page]);
        nextCursor = data.next_cursor;
        holder.replaceChildren(
          data.items.length
            ? table(headers, renderRows(data.items), caption)
            : h("p", { class: "empty" }, emptyText),
        );
        status.textContent = data.items.length
          ? `Page ${page + 1} · ${data.items.length} shown`
          : "";
      } catch (err) {
        showError(slot, err);
      }
      prev.disabled = page === 0;
      next.disabled = !nextCursor;
    }
    prev.addEventListener("click", () => {
      page -= 1;
      load();
    });
    next.addEventListener("click", () => {
      cursors[page + 1] = nextCursor;
      page += 1;
      load();
    });
    const node = h(
      "div",
      {},
      slot,
      holder,
      h(
        "div",
        { class: "pagination" },
        status,
        h("span", { class: "spacer" }),
        prev,
        next,
      ),
    );
    return { node, load };
  }

  async function addressOptions() {
    const { items } = await api("GET", "/inbound-addresses");
    return items.map((a) => a.address);
  }

  function addressSelect(addresses, selected, allLabel) {
    return h(
      "select",
      {},
      allLabel !== null ? h("option", { value: "" }, allLabel) : null,
      addresses.map((a) => h("option", { value: a, selected: a === selected }, a)),
    );
  }

  /** A search form over the hash: each input is [name, wrap, value()];
   * value() may throw an Error whose message is shown (a bad date range),
   * and then nothing is searched. */
  function filterForm(hashBase, inputs, keep) {
    const slot = errorSlot();
    const form = h(
      "form",
      { class: "row-form filters", role: "search", novalidate: true },
      inputs.map(([, wrap]) => wrap),
      h(
        "div",
        { class: "filter-actions" },
        h("button", { type: "submit" }, "Search"),
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            onclick: () => {
              location.hash = hashBase + queryString(keep || {});
            },
          },
          "Clear",
        ),
      ),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      showError(slot, null);
      const params = { ...(keep || {}) };
      try {
        for (const [name, , value] of inputs) params[name] = value();
      } catch (err) {
        showError(slot, err);
        return;
      }
      const target = hashBase + queryString(params);
      if (location.hash === target) refresh();
      else location.hash = target;
    });
    return h("div", {}, form, slot);
  }

  /** "2025-04-11T09:30" from a datetime-local input, read in the zone the
   * console shows times in, as ISO UTC. */
  function inputToIso(v) {
    if (!v) return "";
    const d = new Date(state.utc ? `${v}Z` : v);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  }

  function isoToInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    if (state.utc) return d.toISOString().slice(0, 16);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}`
    );
  }

  /** From/until inputs whose values are checked together: both valid
   * dates, and from not after until. Returns the filter-form entries. */
  function dateRange(params) {
    const zone = displayZone();
    const since = h("input", { type: "datetime-local", value: isoToInput(params.get("since")) });
    const until = h("input", { type: "datetime-local", value: isoToInput(params.get("until")) });
    const read = (input, label) => {
      // A half-typed date leaves value empty but badInput set.
      if (input.validity && input.validity.badInput) {
        throw new Error(`“${label}” is not a complete date and time.`);
      }
      const iso = inputToIso(input.value);
      if (iso === null) throw new Error(`“${label}” is not a valid date.`);
      return iso;
    };
    const check = () => {
      const from = read(since, "From");
      const to = read(until, "Until");
      if (from && to && from > to) {
        throw new Error("“From” must be before “Until”: the range is empty.");
      }
      return { from, to };
    };
    return [
      ["since", field(`From (${zone})`, since).wrap, () => check().from],
      ["until", field(`Until (${zone})`, until).wrap, () => check().to],
    ];
  }

  const numberLink = (number) =>
    h(
      "a",
      {
        href: `#/records${queryString({ phone_number: number })}`,
        class: "mono",
        title: `History of ${number}`,
      },
      number,
    );

  const dash = () => h("span", { class: "muted" }, "—");

  // --- unsubscribed users -----------------------------------------------------------------

  const SORTS = {
    newest: "Newest first",
    oldest: "Oldest first",
    number: "By number",
  };

  /** A column header that sorts the list: a link to `target` order,
   * with aria-sort saying how the list is sorted by this column now. */
  function sortHeader(label, params, ariaSort, target) {
    const next = new URLSearchParams(params);
    next.set("sort", target);
    const arrow = ariaSort === "ascending" ? "↑" : ariaSort === "descending" ? "↓" : "↕";
    return {
      label,
      sort: ariaSort,
      node: h(
        "a",
        {
          href: `#/unsubscribed?${next.toString()}`,
          class: "sort-link",
          title: `Sort: ${SORTS[target].toLowerCase()}`,
        },
        label,
        h("span", { "aria-hidden": "true" }, ` ${arrow}`),
      ),
    };
  }

  async function viewUnsubscribed(params) {
    const addresses = await addressOptions();
    const sort = SORTS[params.get("sort")] ? params.get("sort") : "newest";
    const filterNumber = h("input", {
      type: "search",
      value: params.get("number_prefix") || "",
      autocomplete: "off",
      inputmode: "tel",
      placeholder: "+1 415 555",
    });
    const filterAddress = addressSelect(addresses, params.get("inbound_address"), "All addresses");
    const sortSelect = h(
      "select",
      {},
      Object.entries(SORTS).map(([v, label]) => h("option", { value: v, selected: v === sort }, label)),
    );
    const filters = filterForm("#/unsubscribed", [
      [
        "number_prefix",
        field("Number starts with", filterNumber, "Digits: +1 415, or an area code.").wrap,
        () => filterNumber.value.trim(),
      ],
      ["inbound_address", field("At address", filterAddress).wrap, () => filterAddress.value],
      ["sort", field("Order", sortSelect).wrap, () => sortSelect.value],
    ]);

    const current = {
      number_prefix: params.get("number_prefix"),
      inbound_address: params.get("inbound_address"),
      sort,
    };
    const sorted = new URLSearchParams(queryString(current).slice(1));
    const list = pager(
      (cursor) => api("GET", `/unsubscribed${queryString({ ...current, limit: PAGE_SIZE, cursor })}`),
      (items) => items.map(unsubscribedRow),
      [
        sortHeader("Phone number", sorted, sort === "number" ? "ascending" : null, "number"),
        "Inbound address",
        sortHeader(
          "Unsubscribed since",
          sorted,
          { newest: "descending", oldest: "ascending" }[sort] || null,
          sort === "newest" ? "oldest" : "newest",
        ),
        "Source",
        "Reason",
        ...(isAdmin() ? ["Actions"] : []),
      ],
      "Unsubscribed users",
      "Nobody matches: no unsubscribed users here.",
    );
    await list.load();

    const downloadSlot = errorSlot();
    const download = h("button", { type: "button", class: "secondary" }, "Download CSV");
    download.addEventListener("click", () =>
      busy(download.parentElement, downloadSlot, () => downloadCsv("/unsubscribed", current)),
    );

    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head with-action" },
        h(
          "div",
          {},
          h("h1", {}, "Unsubscribed users"),
          h(
            "p",
            { class: "muted" },
            "End users who opted out, by inbound address. Messages to them are blocked " +
              "according to the address's blocking rules. A number opens its history.",
          ),
          readOnlyNote(),
        ),
        h("div", { class: "head-action" }, download, downloadSlot),
      ),
      isAdmin() ? addUnsubscribedForm(addresses, params.get("inbound_address")) : null,
      h(
        "section",
        { class: "card", "aria-labelledby": "unsub-list-title" },
        h("h2", { id: "unsub-list-title" }, "Search"),
        filters,
        list.node,
      ),
    );
  }

  function sourceBadge(source) {
    return h("span", { class: `badge source-${source}` }, source);
  }

  function unsubscribedRow(u) {
    const slot = errorSlot();
    const actions = h("td", { class: "actions" });
    if (isAdmin()) {
      actions.append(
        h("button", {
          type: "button",
          class: "secondary small",
          text: "Re-subscribe",
          "aria-label": `Re-subscribe ${u.phone_number} at ${u.inbound_address}`,
          onclick: () => act(slot, () => resubscribe(u)),
        }),
        slot,
      );
    }
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, numberLink(u.phone_number)),
      h("td", { class: "mono" }, u.inbound_address),
      h("td", {}, timeEl(u.since)),
      h("td", {}, sourceBadge(u.source)),
      h("td", { class: "reason" }, u.reason || dash()),
      isAdmin() ? actions : null,
    );
  }

  /** Re-subscribing needs the consent evidence: the reason is required. */
  async function resubscribe(u) {
    const values = await formDialog({
      title: `Re-subscribe ${u.phone_number}?`,
      text:
        `Messages from ${u.inbound_address} will reach this number again. Do this only ` +
        "with the person's consent, and say how you got it: it is recorded.",
      fields: [
        {
          name: "reason",
          label: "Reason (the consent evidence)",
          hint: "For example: “Texted START on 2026-11-02, ticket 5120”.",
          multiline: true,
          required: true,
        },
      ],
      okLabel: "Re-subscribe",
    });
    if (!values) return;
    await api("DELETE", `/unsubscribed/${enc(u.inbound_address)}/${enc(u.phone_number)}`, {
      reason: values.reason,
    });
    toast(`Re-subscribed ${u.phone_number}.`);
    await refresh();
  }

  function addUnsubscribedForm(addresses, preselected) {
    const slot = errorSlot();
    const phone = h("input", {
      name: "phone_number",
      required: true,
      placeholder: "+1 415 555 0199",
      autocomplete: "off",
    });
    const address = addressSelect(addresses, preselected, null);
    const reason = h("input", { name: "reason", maxlength: 500, autocomplete: "off" });
    const form = h(
      "form",
      { class: "row-form" },
      field("Phone number", phone).wrap,
      field("Inbound address", address).wrap,
      field("Reason", reason).wrap,
      h("button", { type: "submit", disabled: !addresses.length }, "Unsubscribe"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      busy(form, slot, async () => {
        const rec = await api("POST", "/unsubscribed", {
          phone_number: phone.value,
          inbound_address: address.value,
          reason: reason.value,
        });
        toast(`Unsubscribed ${rec.phone_number} at ${rec.inbound_address}.`);
        await refresh();
      });
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "add-unsub-title" },
      h("h2", { id: "add-unsub-title" }, "Unsubscribe a number by hand"),
      addresses.length
        ? null
        : h("p", { class: "muted" }, "Add an inbound address first."),
      form,
      slot,
    );
  }

  // --- records -------------------------------------------------------------------------------

  async function viewRecords(params) {
    const addresses = await addressOptions();
    const number = h("input", {
      type: "search",
      value: params.get("phone_number") || "",
      autocomplete: "off",
      inputmode: "tel",
    });
    const address = addressSelect(addresses, params.get("inbound_address"), "All addresses");
    const filters = filterForm("#/records", [
      ["phone_number", field("Phone number", number).wrap, () => number.value.trim()],
      ["inbound_address", field("Inbound address", address).wrap, () => address.value],
      ...dateRange(params),
    ]);
    const current = {
      phone_number: params.get("phone_number"),
      inbound_address: params.get("inbound_address"),
      since: params.get("since"),
      until: params.get("until"),
    };

    const list = pager(
      (cursor) =>
        api("GET", `/records${queryString({ ...current, limit: PAGE_SIZE, cursor })}`),
      (items) => items.map(recordRow),
      [
        "Time",
        "Phone number",
        "Inbound address",
        "Status",
        "Source",
        "Keyword / text",
        "By",
        "Reason",
        "Reply sent",
        "Carrier ids",
      ],
      "Records",
      "No records match these filters.",
    );
    await list.load();

    const downloadSlot = errorSlot();
    const download = h("button", { type: "button", class: "secondary" }, "Download CSV");
    download.addEventListener("click", () =>
      busy(download.parentElement, downloadSlot, () => downloadCsv("/records", current)),
    );

    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head with-action" },
        h(
          "div",
          {},
          h("h1", {}, current.phone_number ? `History of ${current.phone_number}` : "Records"),
          h(
            "p",
            { class: "muted" },
            "Every opt-out and opt-in, as it happened. Records are never changed.",
          ),
        ),
        h("div", { class: "head-action" }, download, downloadSlot),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "rec-filter-title" },
        h("h2", { id: "rec-filter-title" }, "Filter"),
        filters,
        list.node,
      ),
    );
  }

  /** When the confirmation reached the carrier: a time where the API
   * gives one, else whether it went out. */
  function replySent(r) {
    if (r.reply_sent_at) return timeEl(r.reply_sent_at);
    if (typeof r.reply_sent === "string") return timeEl(r.reply_sent);
    return r.reply_sent ? "yes" : dash();
  }

  function recordRow(r) {
    const what = [];
    if (r.keyword) what.push(h("span", { class: "badge keyword" }, r.keyword));
    if (r.raw_text && r.raw_text !== r.keyword) {
      what.push(" ", h("span", { class: "mo-text", title: r.raw_text }, `“${r.raw_text}”`));
    }
    return h(
      "tr",
      {},
      h("td", {}, timeEl(r.at)),
      h("td", {}, numberLink(r.phone_number)),
      h("td", { class: "mono" }, r.inbound_address),
      h("td", {}, h("span", { class: `badge status-${r.status}` }, r.status)),
      h("td", {}, sourceBadge(r.source)),
      h("td", {}, what.length ? what : dash()),
      h("td", { class: "nowrap" }, r.actor || dash()),
      h("td", { class: "reason" }, r.reason || dash()),
      h("td", {}, replySent(r)),
      h("td", { class: "mono wrap-any" }, r.carrier_ids || dash()),
    );
  }

  // --- overview ------------------------------------------------------------------------------

  /** [[address, count], ...] from GET /stats, largest first. */
  function byAddressCounts(stats) {
    const raw = (stats.unsubscribed && stats.unsubscribed.by_address) || {};
    const pairs = Array.isArray(raw)
      ? raw.map((x) => [x.inbound_address || x.address, x.count ?? x.unsubscribed ?? x.total ?? 0])
      : Object.entries(raw);
    return pairs.sort((x, y) => y[1] - x[1] || String(x[0]).localeCompare(String(y[0])));
  }

  const fmtInt = (n) => Number(n || 0).toLocaleString("en-US");
  const percent = (part, whole) => (whole ? `${Math.round((1000 * part) / whole) / 10}%` : "—");

  function statTile(label, value, detail, href) {
    const body = [
      h("span", { class: "stat-label" }, label),
      h("span", { class: "stat-value" }, value),
      detail ? h("span", { class: "stat-detail" }, detail) : null,
    ];
    return href
      ? h("a", { class: "stat stat-link", href }, body)
      : h("div", { class: "stat" }, body);
  }

  async function viewOverview() {
    const stats = await api("GET", "/stats");
    const replies = stats.replies || { sent: 0, within_5_min: 0 };
    const late = replies.sent - replies.within_5_min;
    const tiles = h(
      "div",
      { class: "stats" },
      statTile(
        "Unsubscribed numbers",
        fmtInt(stats.unsubscribed.total),
        `at ${byAddressCounts(stats).length} inbound addresses`,
        "#/unsubscribed",
      ),
      statTile(
        "Near-miss review queue",
        fmtInt(stats.near_miss_open),
        stats.near_miss_open
          ? "messages that may revoke consent: review them"
          : "nothing waits for review",
        "#/inbound?near_miss=true&reviewed=false",
      ),
      statTile(
        "Replies pending",
        fmtInt(stats.replies_pending),
        "confirmations waiting for a carrier bind",
      ),
      statTile(
        "Confirmations within 5 minutes",
        percent(replies.within_5_min, replies.sent),
        replies.sent
          ? `${fmtInt(replies.within_5_min)} of ${fmtInt(replies.sent)} sent` +
              (late ? `; ${fmtInt(late)} late` : "")
          : "no confirmation sent yet",
      ),
    );
    if (replies.sent && late) tiles.lastChild.classList.add("stat-bad");
    if (stats.near_miss_open) tiles.children[1].classList.add("stat-attention");

    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, "Overview"),
        h(
          "p",
          { class: "muted" },
          "Opt-outs, what they blocked, and what still needs a person. The FCC expects an " +
            "opt-out confirmation within 5 minutes.",
        ),
      ),
      tiles,
      h(
        "section",
        { class: "card", "aria-labelledby": "daily-title" },
        h("h2", { id: "daily-title" }, "Opt-outs and opt-ins per day, last 30 days"),
        dailyChart(stats.daily || []),
      ),
      h(
        "div",
        { class: "two-col" },
        h(
          "section",
          { class: "card", "aria-labelledby": "by-addr-title" },
          h("h2", { id: "by-addr-title" }, "Unsubscribed by inbound address"),
          byAddressTable(byAddressCounts(stats)),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "submits-title" },
          h("h2", { id: "submits-title" }, "Submits by app and SMS type"),
          submitsTable(stats.submits || []),
        ),
      ),
    );
  }

  function byAddressTable(pairs) {
    if (!pairs.length) return h("p", { class: "empty" }, "Nobody is unsubscribed.");
    return table(
      ["Inbound address", "#Unsubscribed"],
      pairs.map(([address, count]) =>
        h(
          "tr",
          {},
          h(
            "th",
            { scope: "row" },
            h(
              "a",
              { class: "mono", href: `#/unsubscribed${queryString({ inbound_address: address })}` },
              address,
            ),
          ),
          h("td", { class: "num" }, fmtInt(count)),
        ),
      ),
      "Unsubscribed numbers by inbound address",
      null,
      true,
    );
  }

  function submitsTable(rows) {
    if (!rows.length) return h("p", { class: "empty" }, "No submits since the sidecar started.");
    const sorted = [...rows].sort(
      (x, y) => String(x.app_id).localeCompare(String(y.app_id)) || x.sms_type.localeCompare(y.sms_type),
    );
    return table(
      ["App ID", "SMS type", "#Allowed", "#Blocked", "#Blocked share"],
      sorted.map((r) =>
        h(
          "tr",
          {},
          h("th", { scope: "row", class: "mono" }, r.app_id),
          h("td", {}, h("span", { class: `badge type-${r.sms_type}` }, r.sms_type)),
          h("td", { class: "num" }, fmtInt(r.allowed)),
          h("td", { class: "num" }, fmtInt(r.blocked)),
          h("td", { class: "num" }, percent(r.blocked, r.allowed + r.blocked)),
        ),
      ),
      "Allowed and blocked submits by app and SMS type",
    );
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  /** An SVG element: like h(), but in the SVG namespace. */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "text") el.textContent = value;
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  /** A round axis maximum (1, 2, 5 x 10^n) at or above `n`. */
  function niceMax(n) {
    if (n <= 4) return 4;
    const step = 10 ** Math.floor(Math.log10(n));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= n) return m * step;
    return 10 * step;
  }

  /** Grouped bars, one pair per day, drawn here (no chart library), with
   * a title and description for screen readers and the numbers as a table
   * for anyone who prefers them. */
  function dailyChart(days) {
    if (!days.length) return h("p", { class: "empty" }, "No data yet.");
    // A phone gets a narrower drawing, so its text stays legible.
    const narrow = window.matchMedia("(max-width: 600px)").matches;
    const W = narrow ? 360 : 720;
    const H = narrow ? 200 : 230;
    const left = 36;
    const bottom = 24;
    const top = 10;
    const plotW = W - left - 8;
    const plotH = H - top - bottom;
    const max = niceMax(Math.max(0, ...days.map((d) => Math.max(d.opt_outs, d.opt_ins))));
    const slot = plotW / days.length;
    const bar = Math.max(2, Math.min(9, (slot - 4) / 2));
    const y = (v) => top + plotH - (v / max) * plotH;
    const totalOut = days.reduce((n, d) => n + d.opt_outs, 0);
    const totalIn = days.reduce((n, d) => n + d.opt_ins, 0);
    const peak = days.reduce((p, d) => (d.opt_outs > p.opt_outs ? d : p), days[0]);
    const titleId = uid("chart-title");
    const descId = uid("chart-desc");
    const grid = [0, max / 2, max].map((v) =>
      svg(
        "g",
        {},
        svg("line", { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis", text: fmtInt(v) }),
      ),
    );
    const bars = days.map((d, i) => {
      const x = left + i * slot + (slot - 2 * bar) / 2;
      const every = narrow ? 7 : 5;
      const label = i % every === 0 || (i === days.length - 1 && (days.length - 1) % every > 2);
      return svg(
        "g",
        {},
        svg(
          "rect",
          { x, y: y(d.opt_outs), width: bar, height: y(0) - y(d.opt_outs), class: "bar-out" },
          svg("title", { text: `${d.date}: ${d.opt_outs} opt-outs` }),
        ),
        svg(
          "rect",
          { x: x + bar, y: y(d.opt_ins), width: bar, height: y(0) - y(d.opt_ins), class: "bar-in" },
          svg("title", { text: `${d.date}: ${d.opt_ins} opt-ins` }),
        ),
        label
          ? svg("text", {
              x: left + i * slot + slot / 2,
              y: H - 6,
              "text-anchor": "middle",
              class: "axis",
              text: d.date.slice(5),
            })
          : null,
      );
    });
    const chart = svg(
      "svg",
      {
        viewBox: `0 0 ${W} ${H}`,
        role: "img",
        "aria-labelledby": titleId,
        "aria-describedby": descId,
        class: "chart",
        preserveAspectRatio: "xMidYMid meet",
      },
      svg("title", { id: titleId, text: "Opt-outs and opt-ins per day (UTC days)" }),
      svg("desc", {
        id: descId,
        text:
          `From ${days[0].date} to ${days[days.length - 1].date}: ${totalOut} opt-outs and ` +
          `${totalIn} opt-ins` +
          (totalOut ? `; most opt-outs on ${peak.date} (${peak.opt_outs}).` : "."),
      }),
      grid,
      bars,
    );
    const legend = h(
      "p",
      { class: "legend" },
      h("span", { class: "swatch swatch-out", "aria-hidden": "true" }),
      `Opt-outs (${fmtInt(totalOut)})`,
      h("span", { class: "swatch swatch-in", "aria-hidden": "true" }),
      `Opt-ins (${fmtInt(totalIn)})`,
      h("span", { class: "muted" }, " · days in UTC"),
    );
    const fallback = h(
      "details",
      { class: "chart-table" },
      h("summary", {}, "Show the numbers as a table"),
      table(
        ["Day (UTC)", "#Opt-outs", "#Opt-ins"],
        days.map((d) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, h("time", { datetime: d.date }, d.date)),
            h("td", { class: "num" }, fmtInt(d.opt_outs)),
            h("td", { class: "num" }, fmtInt(d.opt_ins)),
          ),
        ),
        "Opt-outs and opt-ins per day",
        null,
        true,
      ),
    );
    return h("div", { class: "chart-wrap" }, chart, legend, fallback);
  }

  // --- inbound messages and the near-miss review queue -------------------------------------

  const ACTIONS = ["opt_out", "opt_in", "help", "none"];

  function triSelect(value, anyLabel, yesLabel, noLabel) {
    return h(
      "select",
      {},
      h("option", { value: "" }, anyLabel),
      h("option", { value: "true", selected: value === "true" }, yesLabel),
      h("option", { value: "false", selected: value === "false" }, noLabel),
    );
  }

  async function viewInbound(params) {
    const addresses = await addressOptions();
    const queue = params.get("near_miss") === "true" && params.get("reviewed") === "false";
    const number = h("input", {
      type: "search",
      value: params.get("phone_number") || "",
      autocomplete: "off",
      inputmode: "tel",
    });
    const address = addressSelect(addresses, params.get("inbound_address"), "All addresses");
    const action = h(
      "select",
      {},
      h("option", { value: "" }, "Any action"),
      ACTIONS.map((a) =>
        h("option", { value: a, selected: params.get("action") === a }, a === "none" ? "none (no keyword)" : a),
      ),
    );
    const nearMiss = triSelect(params.get("near_miss"), "Any", "Near-misses only", "Not near-misses");
    const reviewed = triSelect(params.get("reviewed"), "Any", "Reviewed", "Not reviewed");
    const filters = filterForm("#/inbound", [
      ["inbound_address", field("Inbound address", address).wrap, () => address.value],
      ["phone_number", field("From number", number).wrap, () => number.value.trim()],
      ["action", field("Action", action).wrap, () => action.value],
      ["near_miss", field("Near-miss", nearMiss).wrap, () => nearMiss.value],
      ["reviewed", field("Review", reviewed).wrap, () => reviewed.value],
      ...dateRange(params),
    ]);
    const current = {};
    for (const key of ["inbound_address", "phone_number", "action", "near_miss", "reviewed", "since", "until"]) {
      current[key] = params.get(key);
    }
    const list = pager(
      (cursor) =>
        api("GET", `/inbound-messages${queryString({ ...current, limit: PAGE_SIZE, cursor })}`),
      (items) => items.map(inboundRow),
      ["Time", "From", "To", "Text", "Action", "Review"],
      "Inbound messages",
      queue ? "The review queue is empty." : "No inbound messages match these filters.",
    );
    await list.load();

    const tabs = h(
      "nav",
      { class: "tabs", "aria-label": "Inbound message views" },
      h("a", { href: "#/inbound", "aria-current": queue ? null : "page" }, "All messages"),
      h(
        "a",
        { href: "#/inbound?near_miss=true&reviewed=false", "aria-current": queue ? "page" : null },
        "Near-miss review queue",
      ),
    );
    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, queue ? "Near-miss review queue" : "Inbound messages"),
        h(
          "p",
          { class: "muted" },
          queue
            ? "Messages that matched no keyword but may revoke consent (“please stop”, “STPO”, " +
                "“remove me”). Consent may be revoked by any reasonable means: opt the sender " +
                "out, or dismiss the message with a reason."
            : "Every message end users sent to an inbound address, matched or not.",
        ),
        readOnlyNote(),
      ),
      tabs,
      h(
        "section",
        { class: "card", "aria-labelledby": "inbound-title" },
        h("h2", { id: "inbound-title" }, "Filter"),
        filters,
        list.node,
      ),
    );
  }

  function actionBadge(action) {
    return h("span", { class: `badge action-${action}` }, action === "none" ? "no action" : action);
  }

  function inboundRow(m) {
    const what = [actionBadge(m.action)];
    if (m.keyword) what.push(" ", h("span", { class: "badge keyword" }, m.keyword));
    if (m.near_miss) what.push(" ", h("span", { class: "badge near-miss" }, "near-miss"));
    return h(
      "tr",
      {},
      h("td", {}, timeEl(m.at)),
      h("td", {}, numberLink(m.phone_number)),
      h("td", { class: "mono" }, m.inbound_address),
      h("td", { class: "mo-text wrap-any" }, m.text ? `“${m.text}”` : dash()),
      h("td", {}, what),
      h("td", { class: "review" }, reviewCell(m)),
    );
  }

  function reviewCell(m) {
    if (m.review) {
      const r = m.review;
      return [
        h(
          "span",
          { class: `badge review-${r.decision}` },
          r.decision === "opt_out" ? "opted out" : "dismissed",
        ),
        " by ",
        r.actor || "—",
        ", ",
        timeEl(r.at),
        r.reason ? h("div", { class: "reason" }, r.reason) : null,
      ];
    }
    if (!m.near_miss) return dash();
    if (!isAdmin()) return h("span", { class: "muted" }, "Awaiting an admin's review");
    const slot = errorSlot();
    return h(
      "div",
      { class: "review-actions" },
      h("button", {
        type: "button",
        class: "small",
        text: "Opt out sender",
        "aria-label": `Opt out ${m.phone_number} at ${m.inbound_address}`,
        onclick: () => act(slot, () => reviewOptOut(m)),
      }),
      h("button", {
        type: "button",
        class: "secondary small",
        text: "Dismiss",
        "aria-label": `Dismiss the message from ${m.phone_number}`,
        onclick: () => act(slot, () => reviewDismiss(m)),
      }),
      slot,
    );
  }

  async function reviewOptOut(m) {
    const ok = await confirmDialog(
      `Opt out ${m.phone_number}?`,
      `They wrote “${m.text}”. They will be unsubscribed at ${m.inbound_address}; ` +
        "the record names you and links this message.",
      "Opt out",
    );
    if (!ok) return;
    await api("POST", `/inbound-messages/${enc(m.id)}/opt-out`);
    toast(`Opted out ${m.phone_number} at ${m.inbound_address}.`);
    await refresh();
  }

  async function reviewDismiss(m) {
    const values = await formDialog({
      title: "Dismiss this message?",
      text: `“${m.text}” from ${m.phone_number}. The sender stays subscribed.`,
      fields: [
        {
          name: "reason",
          label: "Reason",
          hint: "Why this is not a revocation, e.g. “asks to stop a delivery, not the texts”.",
          multiline: true,
          required: true,
        },
      ],
      okLabel: "Dismiss",
    });
    if (!values) return;
    await api("POST", `/inbound-messages/${enc(m.id)}/dismiss`, { reason: values.reason });
    toast("Dismissed the message.");
    await refresh();
  }

  // --- audit log ---------------------------------------------------------------------------

  async function viewAudit(params) {
    const actor = h("input", {
      type: "search",
      value: params.get("actor") || "",
      autocomplete: "off",
      spellcheck: "false",
    });
    const filters = filterForm("#/audit", [
      ["actor", field("Actor (token name)", actor).wrap, () => actor.value.trim()],
      ...dateRange(params),
    ]);
    const current = {
      actor: params.get("actor"),
      since: params.get("since"),
      until: params.get("until"),
    };
    const list = pager(
      (cursor) => api("GET", `/audit${queryString({ ...current, limit: PAGE_SIZE, cursor })}`),
      (items) => items.map(auditRow),
      ["Time", "Actor", "Action", "Target", "Change"],
      "Audit log",
      "No audit entries match these filters.",
    );
    await list.load();
    return h(
      "div",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, "Audit log"),
        h(
          "p",
          { class: "muted" },
          "Every administrative change, who made it and when, with the value before and " +
            "after. Entries are never changed.",
        ),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "audit-title" },
        h("h2", { id: "audit-title" }, "Filter"),
        filters,
        list.node,
      ),
    );
  }

  function auditRow(e) {
    return h(
      "tr",
      {},
      h("td", {}, timeEl(e.at)),
      h(
        "td",
        { class: "nowrap" },
        e.actor
          ? h("a", { href: `#/audit${queryString({ actor: e.actor })}` }, e.actor)
          : dash(),
      ),
      h("td", {}, h("span", { class: "badge" }, e.action)),
      h("td", { class: "target" }, e.target || dash()),
      h("td", { class: "change" }, changeView(e.before, e.after)),
    );
  }

  const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  /** A value as a person reads it: lists joined, off for null. */
  function plain(v) {
    if (v === undefined) return "(not set)";
    if (v === null) return "none";
    if (Array.isArray(v)) return v.length ? v.map((x) => (isPlainObject(x) ? JSON.stringify(x) : String(x))).join(", ") : "(empty)";
    if (isPlainObject(v)) return Object.keys(v).length ? JSON.stringify(v) : "(none)";
    if (typeof v === "string") return v === "" ? "(empty)" : v;
    return String(v);
  }

  /** Nested objects as dotted paths ("keywords.opt_out"), so a change deep
   * inside an address reads as one line, not as two JSON blobs. */
  function flatten(v, prefix = "", out = {}) {
    if (isPlainObject(v) && Object.keys(v).length) {
      for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
    } else out[prefix] = v;
    return out;
  }

  /** Before/after of an audit entry: the fields that changed, each as
   * old → new; a creation or deletion lists the fields it had. */
  function changeView(rawBefore, rawAfter) {
    const rows = [];
    const before = isPlainObject(rawBefore) ? flatten(rawBefore) : rawBefore;
    const after = isPlainObject(rawAfter) ? flatten(rawAfter) : rawAfter;
    if (isPlainObject(before) && isPlainObject(after)) {
      const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
      for (const k of keys) {
        if (JSON.stringify(before[k]) === JSON.stringify(after[k])) continue;
        rows.push(
          h(
            "li",
            {},
            h("span", { class: "change-key" }, `${k}: `),
            h("del", {}, plain(before[k])),
            h("span", { "aria-hidden": "true" }, " → "),
            h("span", { class: "visually-hidden" }, " changed to "),
            h("ins", {}, plain(after[k])),
          ),
        );
      }
      if (!rows.length) return h("span", { class: "muted" }, "no change");
    } else if (before == null && after != null) {
      rows.push(h("li", { class: "created" }, h("strong", {}, "created")));
      if (isPlainObject(after)) {
        for (const [k, v] of Object.entries(after)) {
          rows.push(h("li", {}, h("span", { class: "change-key" }, `${k}: `), h("ins", {}, plain(v))));
        }
      } else rows.push(h("li", {}, h("ins", {}, plain(after))));
    } else if (after == null && before != null) {
      rows.push(h("li", { class: "removed" }, h("strong", {}, "removed")));
      if (isPlainObject(before)) {
        for (const [k, v] of Object.entries(before)) {
          rows.push(h("li", {}, h("span", { class: "change-key" }, `${k}: `), h("del", {}, plain(v))));
        }
      } else rows.push(h("li", {}, h("del", {}, plain(before))));
    } else if (before == null && after == null) {
      return dash();
    } else {
      rows.push(
        h(
          "li",
          {},
          h("del", {}, plain(before)),
          h("span", { "aria-hidden": "true" }, " → "),
          h("span", { class: "visually-hidden" }, " changed to "),
          h("ins", {}, plain(after)),
        ),
      );
    }
    return h("ul", { class: "change-list" }, rows);
  }

  /** App IDs of the configured accounts, offered when adding a rule; an
   * empty list when the sidecar does not say (typing one still works). */
  async function configuredAppIds() {
    try {
      const data = await api("GET", "/apps");
      const items = Array.isArray(data) ? data : data.items || data.app_ids || [];
      return items.map((x) => (typeof x === "string" ? x : x.app_id)).filter(Boolean);
    } catch (err) {
      if (err.status === 401) throw err;
      return [];
    }
  }

  /** Links cannot carry the Authorization header: fetch, then save the blob. */
  async function downloadCsv(path, filters) {
    const resp = await request("GET", `${path}${queryString({ ...filters, format: "csv" })}`);
    const blob = await resp.blob();
    const disposition = resp.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename="([^"]+)"/);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: match ? match[1] : "optout-records.csv", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast("CSV downloaded.");
  }

  // --- start ------------------------------------------------------------------------------------

  document.getElementById("sign-out").addEventListener("click", () => signOut());
  const utcSwitch = document.getElementById("utc-switch");
  utcSwitch.checked = state.utc;
  utcSwitch.addEventListener("change", () => {
    state.utc = utcSwitch.checked;
    localStorage.setItem(UTC_KEY, state.utc ? "1" : "0");
    refresh();
  });
  window.addEventListener("hashchange", route);
  route();
})();
