// lockbank live: the page's whole behaviour, plain JavaScript, no library.
// Every value from bankd goes into the page as text (textContent, text
// nodes), never as HTML: owners and holders are user input.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  // The nodes the scenarios drive: ?nodes=http://127.0.0.1:8081,http://127.0.0.1:8082
  // (each must list this page's origin in its --live-origins), else this bankd alone.
  const nodeURLs = (new URLSearchParams(location.search).get("nodes") || "")
    .split(",").map((s) => s.trim().replace(/\/+$/, ""))
    .filter((s) => /^https?:\/\/[^\s/]+$/.test(s));
  if (nodeURLs.length === 0) nodeURLs.push(location.origin);
  const nodeNames = nodeURLs.map((u) => u); // replaced by each node's /healthz name

  // el builds an element; children that are strings become text nodes.
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k === "style") Object.assign(e.style, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));

  // api sends one real request to a bankd and never throws: a transport
  // failure is status 0.
  async function api(base, method, path, body, headers) {
    const init = { method, headers: Object.assign({}, headers || {}) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const t0 = performance.now();
    try {
      const res = await fetch(base + path, init);
      const text = await res.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
      return { status: res.status, data, code: (data && data.code) || "", detail: (data && data.detail) || "", t0, t1: performance.now() };
    } catch (e) {
      return { status: 0, data: null, code: "unreachable", detail: String(e), t0, t1: performance.now() };
    }
  }

  // ---- the snapshot: accounts, leases, nodes, by the database's clock ----
  let snap = null;
  let snapAt = 0; // performance.now() when snap arrived
  const dbNow = () => (snap ? Date.parse(snap.db_now) + (performance.now() - snapAt) : Date.now());
  const dbToPerf = (iso) => Date.parse(iso) - Date.parse(snap.db_now) + snapAt;

  async function refresh() {
    const r = await api("", "GET", "/live/snapshot");
    if (r.status !== 200) {
      $("status").textContent = r.status === 404 && r.code === "live_off"
        ? "Live data is off on this node: " + r.detail
        : "Cannot read the snapshot (" + (r.code || r.status) + "); retrying.";
      return false;
    }
    snap = r.data;
    snapAt = (r.t0 + r.t1) / 2;
    renderStatus();
    renderLeases();
    renderNodes();
    renderAccounts();
    return true;
  }

  function renderStatus() {
    const names = nodeNames.join(", ");
    $("status").textContent = "Scenarios drive " + names + ". Demo mode " +
      (snap.unsafe_demo ? "ON (unsafe strategies and hold_ms enabled: never for real money)." : "off.");
    $("nodes-hint").textContent = nodeURLs.length > 1 ? " (" + nodeURLs.length + " nodes)" : "";
    const b = $("btn-pause-nofence");
    b.disabled = !snap.unsafe_demo;
    const why = $("nofence-why");
    why.hidden = !!snap.unsafe_demo;
    why.textContent = "Without the fence needs a node started with --unsafe-demo: it lets a paused holder overwrite money, which a real node must never allow.";
  }

  function renderLeases() {
    const ul = $("leases");
    ul.replaceChildren();
    if (snap.leases.length === 0) ul.append(el("li", { class: "empty", text: "none" }));
    for (const l of snap.leases) {
      const span = el("span");
      span.dataset.expires = l.expires_at;
      span.dataset.ttl = l.ttl_ms;
      const left = el("span", { class: "left" });
      left.dataset.expires = l.expires_at;
      ul.append(el("li", {},
        el("strong", { text: l.resource }), " held by ", el("strong", { text: l.holder }),
        ", ", el("span", { class: "token", text: "token " + l.token }), ", ", left,
        el("div", { class: "bar", role: "presentation" }, span)));
    }
    tickLeases();
  }

  function tickLeases() {
    if (!snap) return;
    const now = dbNow();
    for (const s of document.querySelectorAll("#leases [data-expires]")) {
      const rest = Math.max(0, Date.parse(s.dataset.expires) - now);
      if (s.classList.contains("left")) s.textContent = rest > 0 ? (rest / 1000).toFixed(1) + " s left" : "ran out";
      else s.style.width = Math.min(100, (100 * rest) / Number(s.dataset.ttl)) + "%";
    }
  }
  if (reducedMotion) setInterval(tickLeases, 1000);
  else (function frame() { tickLeases(); requestAnimationFrame(frame); })();

  function renderNodes() {
    const ul = $("nodes");
    ul.replaceChildren();
    if (snap.nodes.length === 0) ul.append(el("li", { class: "empty", text: "none" }));
    for (const n of snap.nodes) {
      ul.append(el("li", {}, el("strong", { text: n.name }), " · " + n.connections + " connection" + (n.connections === 1 ? "" : "s")));
    }
  }

  function renderAccounts() {
    const box = $("accounts");
    box.replaceChildren();
    if (snap.accounts.length === 0) box.append(el("p", { class: "empty", text: "none yet" }));
    for (const a of snap.accounts) {
      const rows = a.ledger.map((e) => el("tr", {},
        el("td", { text: e.kind }), el("td", { text: fmt(e.amount) }), el("td", { text: e.strategy }),
        el("td", { text: e.fence_token === null ? "–" : String(e.fence_token) }), el("td", { text: fmt(e.balance_after) })));
      box.append(el("article", { class: "account" },
        el("h3", {}, "#" + a.id + " ", el("span", { class: "sub", text: a.owner })),
        el("p", {}, "balance ", el("strong", { text: fmt(a.balance) }), " · opened with " + fmt(a.opening_balance) +
          " · " + a.entries + " ledger entr" + (a.entries === 1 ? "y" : "ies")),
        rows.length ? el("table", {}, el("caption", { class: "sub", text: "ledger tail" }),
          el("thead", {}, el("tr", {}, el("th", { text: "kind" }), el("th", { text: "amount" }), el("th", { text: "strategy" }),
            el("th", { text: "token" }), el("th", { text: "balance after" }))),
          el("tbody", {}, ...rows)) : null));
    }
  }

  // ---- the timeline: Server-Sent Events, every node's, through PostgreSQL ----
  const kindWords = {
    open: (e) => ["opens account #" + e.account_id + " for ", el("q", { text: e.detail || "" }), " with " + fmt(e.balance)],
    deposit: (e) => [changeWords("deposits", e)],
    withdrawal: (e) => [changeWords("withdraws", e)],
    grant: (e) => ["grants " + e.resource + " to ", el("strong", { text: e.holder }), ", token " + e.token +
      (e.old_token ? " (after token " + e.old_token + ", released)" : "")],
    takeover: (e) => ["token " + e.old_token + " ran out (expired); " + e.resource + " taken over by ", el("strong", { text: e.holder }),
      ", token " + e.token],
    renewal: (e) => ["renews " + e.resource + " for ", el("strong", { text: e.holder }), ", token " + e.token],
    release: (e) => ["releases " + e.resource + " (", el("strong", { text: e.holder }), ", token " + e.token + ")"],
    refused: (e) => ["REFUSED: " + (e.detail ? "" : "change") , el("span", { text: e.detail || "" }),
      " — " + e.code + (e.token ? ", token " + e.token : "") + (e.strategy ? ", " + e.strategy : "")],
  };
  function changeWords(verb, e) {
    return verb + " " + fmt(e.amount) + " on #" + e.account_id + " (" + e.strategy +
      (e.batch > 1 ? ", batch of " + e.batch : "") + (e.token ? ", token " + e.token : ", no token") + ") → balance " + fmt(e.balance);
  }

  const timeline = $("timeline");
  function addEvent(e) {
    const words = (kindWords[e.kind] || ((x) => [x.kind]))(e);
    const li = el("li", { class: e.kind === "refused" ? "refused" : "" },
      el("span", { class: "t", text: new Date(e.at).toISOString().slice(11, 23) }),
      el("span", { class: "node", text: e.node || "?" }),
      el("span", { class: "what" }, ...words));
    li.dataset.kind = e.kind;
    li.dataset.id = e.id;
    if (e.token) li.dataset.token = e.token;
    timeline.prepend(li);
    while (timeline.children.length > 300) timeline.lastChild.remove();
  }
  let refreshSoon = null;
  function startEvents() {
    const es = new EventSource("/live/events");
    es.onmessage = (m) => {
      try { addEvent(JSON.parse(m.data)); } catch (_) { return; }
      if (!refreshSoon) refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 150);
    };
    // EventSource reconnects by itself, sending Last-Event-ID: nothing is
    // shown twice or missed. A 503 (too many streams) closes it: retry later.
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setTimeout(startEvents, 5000);
    };
  }

  // ---- the scenarios, drawn as the seed's diagrams ----
  // A story has a swimlane per actor (node-a, node-b), lease bars with their
  // token, each write with its token and outcome in words, the steps as a
  // list, and a verdict with the ledger arithmetic.
  function newStory(title, parent) {
    const root = el("article", { class: "story" });
    const lanesBox = el("div", { class: "lanes" });
    const steps = el("ol", { class: "steps" });
    const verdictBox = el("div");
    root.append(el("h3", { text: title }), lanesBox, steps, verdictBox);
    (parent || $("stories")).prepend(root);
    const t0 = performance.now();
    const lanes = new Map();
    const bars = [];
    let end = t0 + 3000;
    const story = {
      root, t0,
      lane(actor, label) {
        const track = el("div", { class: "track" });
        const writes = el("div", { class: "writes" });
        track.append(writes);
        lanesBox.append(el("div", { class: "lane" }, el("span", { class: "who", text: label }), track));
        lanes.set(actor, { track, writes });
      },
      step(...words) { steps.append(el("li", {}, ...words)); },
      // write draws one request's outcome in its lane, in words.
      write(actor, text, cls) { lanes.get(actor).writes.append(el("span", { class: "write " + cls, text })); },
      // lease draws a lease from..to (performance.now() times).
      lease(actor, token, from, to, ranOut) {
        const b = el("div", { class: "leasebar" + (ranOut ? " ran-out" : ""), title: "lease, token " + token, text: "lease · token " + token });
        lanes.get(actor).track.append(b);
        bars.push({ b, from, to });
        story.layout();
      },
      layout() {
        end = Math.max(end, performance.now(), ...bars.map((x) => x.to));
        for (const { b, from, to } of bars) {
          b.style.left = (100 * (from - t0)) / (end - t0) + "%";
          b.style.width = Math.max(7, (100 * (to - from)) / (end - t0)) + "%";
        }
      },
      verdict(word, tone, arithmetic) {
        story.layout();
        const v = el("p", { class: "verdict " + tone }, el("strong", { text: word }), arithmetic ? el("span", { class: "arith", text: arithmetic }) : null);
        v.dataset.verdict = word;
        verdictBox.replaceChildren(v);
        $("verdicts").textContent = title + ": " + word;
      },
    };
    return story;
  }

  // facts reads what bankd says afterwards: the account and its whole ledger.
  async function facts(base, id) {
    const [a, l] = await Promise.all([api(base, "GET", "/v1/accounts/" + id), api(base, "GET", "/v1/accounts/" + id + "/ledger")]);
    if (a.status !== 200 || l.status !== 200) throw new Error("reading account " + id + ": " + (a.code || a.status) + ", " + (l.code || l.status));
    const entries = l.data.entries;
    const sum = (kind) => entries.filter((e) => e.kind === kind).reduce((s, e) => s + e.amount, 0);
    const f = { balance: a.data.balance, opening: a.data.opening_balance, deposited: sum("deposit"), withdrawn: sum("withdrawal"), entries };
    f.withdrawals = entries.filter((e) => e.kind === "withdrawal");
    f.expected = f.opening + f.deposited - f.withdrawn;
    f.consistent = f.expected === f.balance && f.balance >= 0;
    f.arithmetic = "opening " + fmt(f.opening) + (f.deposited ? " + deposits " + fmt(f.deposited) : "") + " − withdrawals " + fmt(f.withdrawn) +
      " (" + f.withdrawals.length + " in the ledger) = " + fmt(f.expected) + "; bankd's balance: " + fmt(f.balance) +
      (f.consistent ? " ✓ agrees" : " ✗ disagrees");
    return f;
  }

  async function openAccount(base, owner, balance) {
    const r = await api(base, "POST", "/v1/accounts", { owner, balance });
    if (r.status !== 201) throw new Error("opening an account: " + (r.code || r.status) + " " + r.detail);
    return r.data.id;
  }

  const A = () => nodeURLs[0];
  const B = () => nodeURLs[1 % nodeURLs.length];
  const laneName = (i) => {
    const actor = i === 0 ? "node-a" : "node-b";
    const name = nodeNames[i % nodeNames.length];
    return name === actor ? actor : actor + " via " + name;
  };
  const outcome = (r) => (r.status === 201 ? "201 LANDED" : r.status === 0 ? "no answer (down, or this page's origin is not in its --live-origins)" : r.status + " REFUSED " + r.code);

  // The race: two clients at the same instant, each withdrawing the whole
  // balance of a fresh account, per strategy, on node-a and node-b.
  async function playRace() {
    const box = el("article", { class: "story" }, el("h3", { text: "The race: two withdrawals of the whole balance at the same instant" }));
    const grid = el("div", { class: "race" });
    box.append(el("p", { class: "hint", text: snap.unsafe_demo
      ? "Each withdrawal holds 500 ms between reading the balance and writing it (hold_ms, demo mode), so they overlap."
      : "Demo mode is off: no hold between read and write, and the unsafe strategies are not played." }), grid);
    $("stories").prepend(box);
    const strategies = ["unsafe", "row", "lease", "lease-nofence"];
    const demoOnly = { unsafe: true, "lease-nofence": true };
    await Promise.all(strategies.map(async (strategy) => {
      const col = el("div");
      col.dataset.strategy = strategy;
      grid.append(col);
      const story = newStory("race, " + strategy, col);
      story.root.querySelector("h3").replaceWith(el("h4", { text: strategy }));
      if (demoOnly[strategy] && !snap.unsafe_demo) {
        story.step("Not played: " + strategy + " exists only to show the bug, and only a node started with --unsafe-demo runs it.");
        story.verdict("NOT PLAYED", "off", "");
        return;
      }
      story.lane("a", laneName(0));
      story.lane("b", laneName(1));
      const balance = 5000;
      const id = await openAccount(A(), "race-" + strategy, balance);
      story.step("account #" + id + " opened with " + fmt(balance) + "; both nodes withdraw " + fmt(balance) + " (" + strategy + ") at once");
      const body = { amount: balance, strategy };
      if (snap.unsafe_demo) body.hold_ms = 500;
      const [ra, rb] = await Promise.all([api(A(), "POST", "/v1/accounts/" + id + "/withdrawals", body),
        api(B(), "POST", "/v1/accounts/" + id + "/withdrawals", body)]);
      for (const [actor, r] of [["a", ra], ["b", rb]]) {
        const tok = r.data && r.data.fence_token ? " · token " + r.data.fence_token : "";
        story.write(actor, "withdraw " + fmt(balance) + tok + " → " + outcome(r), r.status === 201 ? "landed" : "refused");
      }
      if (ra.status === 0 || rb.status === 0) {
        story.verdict("NOT PLAYED", "off", "a node did not answer: is it up, and is this page's origin in its --live-origins?");
        return;
      }
      const f = await facts(A(), id);
      let verdict = "SAFE";
      if (f.withdrawn > f.opening + f.deposited) verdict = "DOUBLE SPEND";
      else if (!f.consistent) verdict = "LOST UPDATE";
      story.verdict(verdict, verdict === "SAFE" ? "good" : "bad", f.arithmetic +
        (verdict === "DOUBLE SPEND" ? "; paid out " + fmt(f.withdrawn) + " of " + fmt(f.opening + f.deposited) : "") +
        (verdict === "SAFE" && demoOnly[strategy] && strategy === "unsafe" ? " (the two requests did not overlap this time: play it again)" : ""));
    }));
  }

  // The crashed holder: node-a takes the account's lease and dies holding
  // it (the page drops it: no renewal, no release); node-b's lease
  // withdrawal waits until the lease runs out by the database's clock.
  async function playCrash() {
    const story = newStory("The crashed holder: node-a dies holding the lease");
    story.lane("a", laneName(0));
    story.lane("b", laneName(1));
    const id = await openAccount(A(), "crash", 5000);
    const resource = "account:" + id;
    const ttl = 2000;
    const la = await api(A(), "POST", "/v1/locks/" + resource, { holder: "node-a", ttl_ms: ttl });
    if (la.status !== 201) throw new Error("node-a's lock: " + (la.code || la.status));
    await refresh();
    story.lease("a", la.data.token, dbToPerf(la.data.acquired_at), dbToPerf(la.data.expires_at), true);
    story.step("node-a takes the lease on " + resource + ", token " + la.data.token + ", for " + ttl / 1000 + " s");
    story.write("a", "KILLED holding token " + la.data.token + ": no renewal, no release", "note");
    story.step("node-a crashes: it never renews or releases. node-b asks to withdraw 1000 with the lease strategy");
    const rb = await api(B(), "POST", "/v1/accounts/" + id + "/withdrawals", { amount: 1000, strategy: "lease" });
    const waited = (rb.t1 - rb.t0) / 1000;
    const tokB = rb.data && rb.data.fence_token;
    if (rb.status === 201) story.lease("b", tokB, rb.t1 - 30, rb.t1, false);
    story.write("b", "withdraw 1000" + (tokB ? " · token " + tokB : "") + " → " + outcome(rb) + " after " + waited.toFixed(2) + " s", rb.status === 201 ? "landed" : "refused");
    const f = await facts(A(), id);
    const entry = f.withdrawals[0];
    const afterExpiry = entry && Date.parse(entry.created_at) >= Date.parse(la.data.expires_at);
    if (rb.status === 201 && f.withdrawals.length === 1 && f.consistent && tokB > la.data.token && afterExpiry) {
      story.step("node-b got the lease once node-a's ran out, with a higher token: " + la.data.token + " → " + tokB);
      story.verdict("FREED AFTER TTL", "good", "node-b waited " + waited.toFixed(2) + " s; " + f.arithmetic);
    } else {
      story.verdict("UNEXPECTED", "bad", "node-b: " + outcome(rb) + (afterExpiry === false ? ", written while node-a's lease was still live" : "") + "; " + f.arithmetic);
    }
  }

  // waitUntil polls cond (a real request each time) every 100 ms, up to ms.
  async function waitUntil(cond, ms) {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      if (await cond()) return true;
      await sleep(100);
    }
    return false;
  }
  const leaseIn = (resource) => snap.leases.find((l) => l.resource === resource);

  // The paused holder, with the fence: the README's curl story. node-a takes
  // the lock API's lease and pauses past it; node-b takes it over and
  // withdraws with its token; node-a wakes and withdraws with its old one.
  async function playPauseFenced() {
    const story = newStory("The paused holder, with the fence (Fencing-Token)");
    story.lane("a", laneName(0));
    story.lane("b", laneName(1));
    const id = await openAccount(A(), "pause-fenced", 5000);
    const resource = "account:" + id;
    const la = await api(A(), "POST", "/v1/locks/" + resource, { holder: "node-a", ttl_ms: 2000 });
    if (la.status !== 201) throw new Error("node-a's lock: " + (la.code || la.status));
    const tokA = la.data.token;
    await refresh();
    story.lease("a", tokA, dbToPerf(la.data.acquired_at), dbToPerf(la.data.expires_at), true);
    story.step("node-a takes the lease on " + resource + ", token " + tokA + ", and pauses (GC, swap, a frozen VM) past it");
    story.write("a", "PAUSED holding token " + tokA, "note");
    await waitUntil(async () => { const r = await api(B(), "GET", "/v1/locks/" + resource); return r.status === 200 && !r.data.held; }, 15000);
    story.step("node-a's lease runs out, by the database's clock");
    const lb = await api(B(), "POST", "/v1/locks/" + resource, { holder: "node-b", ttl_ms: 10000 });
    if (lb.status !== 201) throw new Error("node-b's lock: " + (lb.code || lb.status));
    const tokB = lb.data.token;
    const wb = await api(B(), "POST", "/v1/accounts/" + id + "/withdrawals", { amount: 1000 }, { "Fencing-Token": String(tokB) });
    story.lease("b", tokB, dbToPerf(lb.data.acquired_at), performance.now(), false);
    story.step("node-b takes the lease, token " + tokB + ", and withdraws 1000 with Fencing-Token " + tokB + ": " + outcome(wb));
    story.write("b", "withdraw 1000 · token " + tokB + " → " + outcome(wb), wb.status === 201 ? "landed" : "refused");
    const wa = await api(A(), "POST", "/v1/accounts/" + id + "/withdrawals", { amount: 1000 }, { "Fencing-Token": String(tokA) });
    story.step("node-a wakes and withdraws 1000 with Fencing-Token " + tokA + ", as if nothing happened: " + outcome(wa));
    story.write("a", "late write · token " + tokA + " → " + (wa.status === 201 ? "201 LANDED" : wa.status + " REFUSED by the fence: " + wa.code),
      wa.status === 201 ? "landed-bad" : "refused");
    await api(B(), "DELETE", "/v1/locks/" + resource, undefined, { "Lease-Id": lb.data.lease_id });
    const f = await facts(A(), id);
    const onlyB = f.consistent && f.withdrawals.length === 1 && f.withdrawals[0].fence_token === tokB;
    if (wa.status === 409 && wa.code === "stale_fencing_token" && onlyB) {
      story.verdict("FENCED", "good", "the late write was refused (stale_fencing_token); " + f.arithmetic);
    } else if (wa.status === 201 && !f.consistent) {
      story.verdict("STALE OVERWRITE", "bad", f.arithmetic);
    } else {
      story.verdict("UNEXPECTED", "bad", "late write " + outcome(wa) + "; " + f.arithmetic);
    }
  }

  // The paused holder, without the fence (demo mode): node-a's own
  // lease-nofence withdrawal reads the balance, then holds past its lease
  // (hold_ms stands for the pause); node-b takes over and withdraws; node-a
  // then writes the balance it computed from its stale read.
  async function playPauseNoFence() {
    const story = newStory("The paused holder, without the fence (lease-nofence)");
    story.lane("a", laneName(0));
    story.lane("b", laneName(1));
    const id = await openAccount(A(), "pause-nofence", 5000);
    const resource = "account:" + id;
    const hold = Math.min(30000, (snap.lease_ttl_ms || 5000) + 1500);
    const late = api(A(), "POST", "/v1/accounts/" + id + "/withdrawals", { amount: 1000, strategy: "lease-nofence", hold_ms: hold });
    let la = null;
    await waitUntil(async () => { await refresh(); la = leaseIn(resource); return !!la; }, 10000);
    if (!la) throw new Error("node-a never held the lease");
    story.lease("a", la.token, dbToPerf(la.acquired_at), dbToPerf(la.expires_at), true);
    story.step("node-a takes the lease, token " + la.token + ", reads the balance, and pauses for " + hold / 1000 + " s, past its lease");
    story.write("a", "PAUSED after reading, holding token " + la.token, "note");
    await waitUntil(async () => { await refresh(); return !leaseIn(resource); }, hold + 5000);
    story.step("node-a's lease runs out, by the database's clock");
    const wb = await api(B(), "POST", "/v1/accounts/" + id + "/withdrawals", { amount: 1000, strategy: "lease-nofence" });
    const tokB = wb.data && wb.data.fence_token;
    story.lease("b", tokB, wb.t0, wb.t1, false);
    story.step("node-b takes the lease, token " + tokB + ", and withdraws 1000: " + outcome(wb));
    story.write("b", "withdraw 1000 · token " + tokB + " → " + outcome(wb), wb.status === 201 ? "landed" : "refused");
    const wa = await late;
    story.step("node-a wakes and writes the balance it computed before the pause: " + outcome(wa));
    story.write("a", "late write · token " + la.token + " → " + (wa.status === 201 ? "201 LANDED, no fence stopped it" : wa.status + " REFUSED " + wa.code),
      wa.status === 201 ? "landed-bad" : "refused");
    const f = await facts(A(), id);
    if (wa.status === 201 && !f.consistent) story.verdict("STALE OVERWRITE", "bad", f.arithmetic + "; node-b's withdrawal was overwritten");
    else if (wa.status === 409 && wa.code === "stale_fencing_token" && f.consistent) story.verdict("FENCED", "good", f.arithmetic);
    else story.verdict("UNEXPECTED", "bad", "late write " + outcome(wa) + "; " + f.arithmetic);
  }

  const scenarios = { race: playRace, crash: playCrash, "pause-fenced": playPauseFenced, "pause-nofence": playPauseNoFence };
  for (const b of document.querySelectorAll("button[data-scenario]")) {
    b.addEventListener("click", async () => {
      if (b.getAttribute("aria-busy") === "true") return;
      b.setAttribute("aria-busy", "true");
      try {
        if (!snap) await refresh();
        await scenarios[b.dataset.scenario]();
      } catch (e) {
        const story = newStory("Could not play: " + b.textContent);
        story.verdict("NOT PLAYED", "off", String(e && e.message ? e.message : e));
      } finally {
        b.removeAttribute("aria-busy");
        refresh();
      }
    });
  }

  async function init() {
    await Promise.all(nodeURLs.map(async (u, i) => {
      const r = await api(u, "GET", "/healthz");
      if (r.status === 200 && r.data && r.data.node) nodeNames[i] = r.data.node;
    }));
    await refresh();
    setInterval(refresh, 1000);
    startEvents();
    document.body.dataset.ready = "true";
  }
  init();
})();
