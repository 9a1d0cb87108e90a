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
  function toast(message) {
    const el = document.getElementById("toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (el.hidden = true), 4000);
  }

  /** Asks before a change; `extra` (optional) is shown between the text and
   * the buttons, e.g. a required reason field. */
  function confirmDialog(title, text, okLabel, extra = null) {
    const dialog = document.getElementById("confirm-dialog");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel;
    document.getElementById("confirm-extra").replaceChildren(...(extra ? [extra] : []));
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  const pad = (n) => String(n).padStart(2, "0");
  /** ISO-8601 UTC from the API as local "YYYY-MM-DD HH:MM:SS" in a <time>. */
  function timeEl(iso) {
    const d = new Date(iso);
    const local =
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return h("time", { datetime: iso, title: `${iso} (UTC)` }, local);
  }

  function typeBadges(types) {
    if (!types.length) return h("span", { class: "muted" }, "nothing");
    return types.map((t) => h("span", { class: `badge type-${t}` }, t));
  }

  const isAdmin = () => state.me && state.me.role === "admin";

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
        if (!location.hash || location.hash === "#/") location.hash = "#/addresses";
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
    const hash = location.hash || "#/addresses";
    for (const [pattern, view] of ROUTES) {
      const m = hash.match(pattern);
      if (!m) continue;
      for (const a of document.querySelectorAll("#nav a")) {
        const current = hash.startsWith(`#/${a.dataset.nav}`);
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
          h("p", {}, h("a", { href: "#/addresses" }, "Back to inbound addresses")),
        );
      }
      if (generation !== state.generation) return; // the user moved on meanwhile
      main().replaceChildren(node);
      const heading = main().querySelector("h1");
      if (heading) document.title = `${heading.textContent} · Opt-out console`;
      return;
    }
    location.hash = "#/addresses";
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
        del.addEventListener("click", async () => {
          const ok = await confirmDialog(
            `Delete ${a.address}?`,
            "Its keywords, rules and unsubscribed users are removed. The history records stay.",
            "Delete address",
          );
          if (!ok) return;
          try {
            await api("DELETE", `/inbound-addresses/${enc(a.address)}`);
            toast(`Deleted ${a.address}.`);
            await refresh();
          } catch (err) {
            showError(slot, err);
          }
        });
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

  /** A table; a header written "#Label" is a right-aligned number column. */
  function table(headers, rows, caption, className) {
    return h(
      "div",
      { class: "table-wrap" },
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
              t.startsWith("#")
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

  async function viewAddress(raw) {
    const a = await api("GET", `/inbound-addresses/${enc(raw)}`);
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
        { class: "page-head" },
        h("h1", { class: "mono" }, a.address),
        h("p", { class: "muted" }, a.description || "No description."),
        readOnlyNote(),
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
        ),
      ),
      rulesCard(a),
      h("div", { class: "two-col" }, keywordsCard(a), repliesCard(a)),
    );
  }

  function typeChecks(selected, labelFor, disabled) {
    return SMS_TYPES.map((t) =>
      h("input", {
        type: "checkbox",
        value: t,
        checked: selected.includes(t),
        disabled,
        "aria-label": labelFor(t),
      }),
    );
  }

  const checkedTypes = (boxes) => boxes.filter((b) => b.checked).map((b) => b.value);

  function rulesCard(a) {
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
    if (admin) card.append(addRuleForm(base));
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

  function addRuleForm(base) {
    const slot = errorSlot();
    const appId = h("input", { name: "app_id", required: true, autocomplete: "off" });
    const boxes = SMS_TYPES.map((t) => h("input", { type: "checkbox", value: t, id: uid("t") }));
    const form = h(
      "form",
      { class: "row-form" },
      field("App ID", appId).wrap,
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
      lists[key] = h("textarea", { rows: 7, readonly: !admin, spellcheck: "false" });
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
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const lines = (key) =>
        lists[key].value
          .split("\n")
          .map((s) => s.trim())
          .filter(Boolean);
      busy(form, slot, async () => {
        await api("PUT", `/inbound-addresses/${enc(a.address)}/keywords`, {
          opt_out: lines("opt_out"),
          opt_in: lines("opt_in"),
          help: lines("help"),
          match: form.querySelector("input[name=match]:checked").value,
        });
        toast("Saved the keywords.");
      });
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "kw-title" },
      h("h2", { id: "kw-title" }, "Keywords"),
      form,
    );
  }

  function repliesCard(a) {
    const admin = isAdmin();
    const slot = errorSlot();
    const parts = {};
    const blocks = REPLY_KINDS.map(([key, label, hint]) => {
      const text = h("textarea", { rows: 3, maxlength: 1600, readonly: !admin });
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

  function filterForm(hashBase, inputs) {
    const form = h(
      "form",
      { class: "row-form filters", role: "search" },
      inputs.map(([, wrap]) => wrap),
      h("button", { type: "submit" }, "Search"),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () => {
            location.hash = hashBase;
          },
        },
        "Clear",
      ),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const params = {};
      for (const [name, , value] of inputs) params[name] = value();
      const target = hashBase + queryString(params);
      if (location.hash === target) refresh();
      else location.hash = target;
    });
    return form;
  }

  // --- unsubscribed users -----------------------------------------------------------------

  async function viewUnsubscribed(params) {
    const addresses = await addressOptions();
    const filterNumber = h("input", {
      type: "search",
      value: params.get("phone_number") || "",
      autocomplete: "off",
    });
    const filterAddress = addressSelect(addresses, params.get("inbound_address"), "All addresses");
    const filters = filterForm("#/unsubscribed", [
      ["phone_number", field("Search by number", filterNumber).wrap, () => filterNumber.value.trim()],
      ["inbound_address", field("At address", filterAddress).wrap, () => filterAddress.value],
    ]);

    const list = pager(
      (cursor) =>
        api(
          "GET",
          `/unsubscribed${queryString({
            phone_number: params.get("phone_number"),
            inbound_address: params.get("inbound_address"),
            limit: PAGE_SIZE,
            cursor,
          })}`,
        ),
      (items) => items.map(unsubscribedRow),
      ["Phone number", "Inbound address", "Unsubscribed since", "Source", ...(isAdmin() ? ["Actions"] : [])],
      "Unsubscribed users",
      "Nobody matches: no unsubscribed users here.",
    );
    await list.load();

    const current = {
      phone_number: params.get("phone_number"),
      inbound_address: params.get("inbound_address"),
    };
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
              "according to the address's blocking rules.",
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
          onclick: async () => {
            const reason = h("input", {
              id: "resubscribe-reason",
              name: "reason",
              required: true,
              maxlength: 500,
              autocomplete: "off",
            });
            const ok = await confirmDialog(
              `Re-subscribe ${u.phone_number}?`,
              `Messages from ${u.inbound_address} will reach this number again. ` +
                "Do this only with the person's consent; it is recorded.",
              "Re-subscribe",
              h(
                "p",
                {},
                h("label", { for: "resubscribe-reason" }, "Reason (the consent evidence)"),
                reason,
              ),
            );
            if (!ok) return;
            await act(slot, async () => {
              await api(
                "DELETE",
                `/unsubscribed/${enc(u.inbound_address)}/${enc(u.phone_number)}`,
                { reason: reason.value.trim() },
              );
              toast(`Re-subscribed ${u.phone_number}.`);
              await refresh();
            });
          },
        }),
        slot,
      );
    }
    return h(
      "tr",
      {},
      h("th", { scope: "row", class: "mono" }, u.phone_number),
      h("td", { class: "mono" }, u.inbound_address),
      h("td", {}, timeEl(u.since)),
      h("td", {}, h("span", { class: `badge source-${u.source}` }, u.source)),
      isAdmin() ? actions : null,
    );
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

  /** "2025-04-11T09:30" (datetime-local, the browser's zone) as ISO UTC. */
  const localToIso = (v) => (v ? new Date(v).toISOString() : "");
  function isoToLocal(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}`
    );
  }

  async function viewRecords(params) {
    const addresses = await addressOptions();
    const number = h("input", {
      type: "search",
      value: params.get("phone_number") || "",
      autocomplete: "off",
    });
    const address = addressSelect(addresses, params.get("inbound_address"), "All addresses");
    const since = h("input", { type: "datetime-local", value: isoToLocal(params.get("since")) });
    const until = h("input", { type: "datetime-local", value: isoToLocal(params.get("until")) });
    const filters = filterForm("#/records", [
      ["phone_number", field("Phone number", number).wrap, () => number.value.trim()],
      ["inbound_address", field("Inbound address", address).wrap, () => address.value],
      ["since", field("Since", since).wrap, () => localToIso(since.value)],
      ["until", field("Until", until).wrap, () => localToIso(until.value)],
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
      ["Time", "Phone number", "Inbound address", "Status", "Source", "Keyword / text", "By", "Reason"],
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
          h("h1", {}, "Records"),
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
      h("td", { class: "mono" }, r.phone_number),
      h("td", { class: "mono" }, r.inbound_address),
      h("td", {}, h("span", { class: `badge status-${r.status}` }, r.status)),
      h("td", {}, h("span", { class: `badge source-${r.source}` }, r.source)),
      h("td", {}, what.length ? what : h("span", { class: "muted" }, "—")),
      h("td", { class: "nowrap" }, r.actor || h("span", { class: "muted" }, "—")),
      h("td", {}, r.reason || h("span", { class: "muted" }, "—")),
    );
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
  window.addEventListener("hashchange", route);
  route();
})();
