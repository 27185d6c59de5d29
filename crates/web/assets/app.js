// Marquee's web app: one small module for every page. It speaks only the public HTTP API
// (bearer token in localStorage) and shows the API's own error messages.

const $ = (selector, root = document) => root.querySelector(selector);
const page = document.body.dataset.page;

// ---- session and API -------------------------------------------------------------------

const session = {
  get token() { return localStorage.getItem("marquee.token"); },
  get user() {
    try { return JSON.parse(localStorage.getItem("marquee.user") || "null"); } catch { return null; }
  },
  save(body) {
    localStorage.setItem("marquee.token", body.token);
    localStorage.setItem("marquee.user", JSON.stringify(body.user));
  },
  clear() {
    localStorage.removeItem("marquee.token");
    localStorage.removeItem("marquee.user");
  },
};

class ApiFailure extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed (${status})`);
    this.status = status;
    this.code = error.code || "error";
    this.body = body;
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (session.token) init.headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let parsed = null;
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = text; }
  }
  if (!response.ok) {
    if (response.status === 401 && session.token) session.clear();
    throw new ApiFailure(response.status, parsed);
  }
  return parsed;
}

function flash(message, kind = "error") {
  const box = $("#flash");
  if (!box) return;
  box.textContent = message;
  box.className = `flash ${kind}`;
  box.hidden = !message;
}

function fail(error) {
  console.error(error);
  flash(error instanceof ApiFailure ? error.message : String(error));
}

function money(cents, currency) {
  if (cents == null) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "GBP" })
      .format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency || ""}`;
  }
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, {
    weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === false || value == null) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function requireUser() {
  if (session.token) return true;
  location.href = `/signin?next=${encodeURIComponent(location.pathname + location.search)}`;
  return false;
}

function header() {
  const user = session.user;
  $("#who").textContent = user ? `${user.name} (${user.role})` : "";
  $("#signin-link").hidden = !!user;
  $("#signout").hidden = !user;
  $("#signout").addEventListener("click", () => { session.clear(); location.href = "/"; });
  for (const link of document.querySelectorAll("[data-needs-user]")) link.hidden = !user;
}

// ---- home: search ----------------------------------------------------------------------

function home() {
  const form = $("#search");
  let here = null;
  let cursor = null;
  const params = new URLSearchParams(location.search);
  for (const name of ["q", "category", "from", "to"]) if (params.get(name)) form[name].value = params.get(name);

  $("#near-me").addEventListener("click", () => {
    if (!navigator.geolocation) { flash("This browser cannot share its location."); return; }
    $("#where").textContent = "Finding where you are…";
    navigator.geolocation.getCurrentPosition(
      (position) => {
        here = { lat: position.coords.latitude, lon: position.coords.longitude };
        $("#near-me").setAttribute("aria-pressed", "true");
        $("#where").textContent = `Near ${here.lat.toFixed(2)}, ${here.lon.toFixed(2)}`;
        if (!form.radius.value) form.radius.value = 50;
        run(false);
      },
      () => { $("#where").textContent = ""; flash("Location is unavailable; search by words instead."); },
    );
  });

  async function run(more) {
    const query = new URLSearchParams();
    const q = form.q.value.trim();
    if (q) query.set("q", q);
    if (form.category.value) query.set("category", form.category.value);
    if (form.from.value) query.set("from", `${form.from.value}T00:00:00Z`);
    if (form.to.value) query.set("to", `${form.to.value}T23:59:59Z`);
    if (here) {
      query.set("lat", here.lat);
      query.set("lon", here.lon);
      if (form.radius.value) query.set("radius_km", form.radius.value);
      if (!q) query.set("sort", "distance");
    }
    if (more && cursor) query.set("cursor", cursor);
    try {
      flash("");
      const found = await api("GET", `/api/v1/search?${query}`);
      const list = $("#results");
      if (!more) list.replaceChildren();
      for (const hit of found.hits) {
        const price = hit.min_price_cents != null ? `from ${money(hit.min_price_cents, hit.currency)}` : "";
        const distance = hit.distance_km != null ? ` · ${hit.distance_km.toFixed(1)} km away` : "";
        list.append(el("li", { class: "result" },
          el("a", { href: `/events/${hit.id}`, class: "title", text: hit.title }),
          el("p", { class: "muted", text: `${when(hit.starts_at)} · ${hit.venue.name}, ${hit.venue.city}${distance}` }),
          el("p", { class: "price", text: `${hit.category} ${price ? "· " + price : ""}` }),
        ));
      }
      cursor = found.next_cursor;
      $("#more").hidden = !cursor;
      $("#summary").textContent = `${found.total} event${found.total === 1 ? "" : "s"} found`;
    } catch (error) { fail(error); }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); run(false); });
  $("#more").addEventListener("click", () => run(true));
  run(false);
}

// ---- event page: seat map, waiting room, hold, checkout ---------------------------------

function eventPage() {
  const eventId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const chosen = new Set();
  const seatNodes = new Map();
  let event = null;
  let hold = null;
  let countdown = null;
  const passKey = `marquee.pass.${eventId}`;

  async function load() {
    try {
      event = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}`);
      document.title = `${event.title} · Marquee`;
      $("#title").textContent = event.title;
      $("#meta").textContent = `${when(event.starts_at)} · ${event.venue ? event.venue.name + ", " + event.venue.city : ""}`;
      $("#description").textContent = event.description || "";
      $("#event").setAttribute("aria-busy", "false");
      if (event.waiting_room && event.waiting_room.enabled && !sessionStorage.getItem(passKey)) {
        $("#queue-panel").hidden = false;
      }
      const seats = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}/seats`);
      drawSeats(seats);
      follow(seats.version);
    } catch (error) { fail(error); }
  }

  function drawSeats(map) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const sections = new Map();
    for (const seat of map.seats) {
      if (!sections.has(seat.section)) sections.set(seat.section, new Map());
      const rows = sections.get(seat.section);
      if (!rows.has(seat.row)) rows.set(seat.row, []);
      rows.get(seat.row).push(seat);
    }
    let y = 10;
    let width = 200;
    for (const [section, rows] of sections) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", 4);
      label.setAttribute("y", y + 12);
      label.setAttribute("class", "section-label");
      label.textContent = section;
      svg.append(label);
      y += 22;
      for (const [row, seats] of rows) {
        const rowLabel = document.createElementNS(ns, "text");
        rowLabel.setAttribute("x", 4);
        rowLabel.setAttribute("y", y + 11);
        rowLabel.setAttribute("class", "row-label");
        rowLabel.textContent = row;
        svg.append(rowLabel);
        seats.forEach((seat, index) => {
          const node = document.createElementNS(ns, "rect");
          const x = 30 + index * 18;
          width = Math.max(width, x + 24);
          node.setAttribute("x", x);
          node.setAttribute("y", y);
          node.setAttribute("width", 14);
          node.setAttribute("height", 14);
          node.setAttribute("rx", 3);
          node.setAttribute("tabindex", "0");
          node.setAttribute("role", "checkbox");
          node.setAttribute("aria-checked", "false");
          node.dataset.seatId = seat.id;
          node.dataset.label = `${section} row ${row} seat ${seat.number}, ${money(seat.price_cents, event.currency)}`;
          const title = document.createElementNS(ns, "title");
          node.append(title);
          setStatus(node, seat.status);
          node.addEventListener("click", () => toggle(node));
          node.addEventListener("keydown", (key) => {
            if (key.key === " " || key.key === "Enter") { key.preventDefault(); toggle(node); }
          });
          seatNodes.set(seat.id, node);
          svg.append(node);
        });
        y += 18;
      }
      y += 8;
    }
    svg.setAttribute("viewBox", `0 0 ${width} ${y + 4}`);
    svg.setAttribute("width", Math.min(width * 2, 940));
    $("#seatmap").replaceChildren(svg);
    const ga = $("#ga");
    ga.replaceChildren();
    for (const area of map.general_admission || []) {
      ga.append(el("p", { "data-ga": area.section, text: `${area.section}: ${area.available} of ${area.capacity} standing places left` }));
    }
  }

  function setStatus(node, status) {
    node.dataset.status = status;
    node.setAttribute("class", `seat ${status}${chosen.has(node.dataset.seatId) ? " chosen" : ""}`);
    node.setAttribute("aria-disabled", status === "available" ? "false" : "true");
    node.setAttribute("aria-label", `${node.dataset.label}, ${status}`);
    node.querySelector("title").textContent = `${node.dataset.label} (${status})`;
    if (status !== "available" && chosen.has(node.dataset.seatId)) {
      chosen.delete(node.dataset.seatId);
      node.setAttribute("aria-checked", "false");
      node.setAttribute("class", `seat ${status}`);
    }
    $("#hold-selected").disabled = chosen.size === 0;
  }

  function toggle(node) {
    if (node.dataset.status !== "available") return;
    const id = node.dataset.seatId;
    if (chosen.has(id)) chosen.delete(id); else chosen.add(id);
    node.setAttribute("aria-checked", chosen.has(id) ? "true" : "false");
    setStatus(node, node.dataset.status);
  }

  function follow(since) {
    const channel = `event:${eventId}:seats`;
    const source = new EventSource(`/api/v1/push/sse?channel=${encodeURIComponent(channel)}&since=${since}`);
    source.addEventListener("seats", (message) => {
      const change = JSON.parse(message.data).data;
      for (const seat of change.seat_ids || []) {
        const node = seatNodes.get(seat);
        if (node) setStatus(node, change.status);
      }
      if (change.general_admission) refreshSeats();
    });
    source.addEventListener("reset", () => { source.close(); refreshSeats(true); });
  }

  async function refreshSeats(resubscribe = false) {
    try {
      const seats = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}/seats`);
      drawSeats(seats);
      if (resubscribe) follow(seats.version);
    } catch (error) { fail(error); }
  }

  async function requestHold(body) {
    if (!requireUser()) return;
    const headers = { "idempotency-key": crypto.randomUUID() };
    const pass = sessionStorage.getItem(passKey);
    if (pass) headers["x-marquee-pass"] = pass;
    try {
      flash("");
      hold = await api("POST", `/api/v1/events/${encodeURIComponent(eventId)}/holds`, body, headers);
      showHold();
    } catch (error) {
      if (error.code === "queue_required") {
        sessionStorage.removeItem(passKey);
        $("#queue-panel").hidden = false;
        $("#join-queue").focus();
      }
      fail(error);
    }
  }

  function showHold() {
    $("#hold-panel").hidden = false;
    const seats = hold.seat_ids.length ? `${hold.seat_ids.length} seat(s)` : "standing places";
    $("#hold-summary").textContent = `${seats} held for you.`;
    clearInterval(countdown);
    const tick = () => {
      const left = Math.max(0, Math.round((new Date(hold.expires_at) - Date.now()) / 1000));
      $("#countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
      if (left === 0) { clearInterval(countdown); flash("Your hold has expired."); $("#hold-panel").hidden = true; }
    };
    tick();
    countdown = setInterval(tick, 1000);
    $("#card").focus();
  }

  $("#hold-selected").addEventListener("click", () => requestHold({ seat_ids: [...chosen] }));
  $("#hold-best").addEventListener("click", () => requestHold({ quantity: Number($("#best-count").value) }));
  $("#release").addEventListener("click", async () => {
    if (!hold) return;
    try {
      await api("DELETE", `/api/v1/holds/${hold.id}`);
      hold = null;
      clearInterval(countdown);
      $("#hold-panel").hidden = true;
    } catch (error) { fail(error); }
  });
  $("#checkout").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    if (!hold) return;
    $("#pay").disabled = true;
    try {
      flash("");
      const order = await api("POST", "/api/v1/orders",
        { hold_id: hold.id, payment: { method: "card", token: $("#card").value.trim() } },
        { "idempotency-key": crypto.randomUUID() });
      clearInterval(countdown);
      $("#hold-panel").hidden = true;
      $("#tickets-panel").hidden = false;
      await renderTickets(order, $("#tickets"));
      flash(`Paid ${money(order.total_cents, order.currency)}. Enjoy the show!`, "ok");
    } catch (error) { fail(error); } finally { $("#pay").disabled = false; }
  });

  $("#join-queue").addEventListener("click", async () => {
    if (!requireUser()) return;
    try {
      const place = await api("POST", `/api/v1/events/${encodeURIComponent(eventId)}/queue`, {});
      showPlace(place);
      watchPlace(place.token);
    } catch (error) { fail(error); }
  });

  function showPlace(place) {
    const status = $("#queue-status");
    if (place.status === "admitted" && place.pass) {
      sessionStorage.setItem(passKey, place.pass);
      status.textContent = "It's your turn: pick your seats now.";
      $("#join-queue").hidden = true;
    } else if (place.status === "waiting") {
      const eta = place.eta_seconds != null ? ` · about ${Math.ceil(place.eta_seconds / 60)} min` : "";
      status.textContent = place.opens_at
        ? `You are in the queue. The order is drawn at random when the sale opens (${when(place.opens_at)}).`
        : `You are number ${place.position} in line${eta}.`;
      $("#join-queue").hidden = true;
    } else {
      status.textContent = "Your place was lost (you left or were away too long). Join again.";
      $("#join-queue").hidden = false;
    }
  }

  function watchPlace(token) {
    const source = new EventSource(`/api/v1/push/sse?channel=${encodeURIComponent("queue:" + token)}`);
    const update = (message) => showPlace(JSON.parse(message.data).data);
    source.addEventListener("queue.position", update);
    source.addEventListener("queue.admitted", (message) => { update(message); source.close(); });
  }

  load();
}

async function renderTickets(order, list) {
  for (const ticket of order.tickets) {
    const where = ticket.row ? `${ticket.section}, row ${ticket.row}, seat ${ticket.number}` : `${ticket.section} (standing)`;
    const qr = el("div", { class: "qr", role: "img", "aria-label": `QR code of ticket ${ticket.id}` });
    list.append(el("li", { class: "ticket", "data-ticket": ticket.id },
      el("strong", { text: where }), qr, el("code", { text: ticket.code })));
    try {
      const response = await fetch(`/api/v1/orders/${order.id}/tickets/${ticket.id}/qr.svg`,
        { headers: { authorization: `Bearer ${session.token}` } });
      if (response.ok) qr.innerHTML = await response.text();
    } catch (error) { console.error(error); }
  }
}

// ---- orders ------------------------------------------------------------------------------

async function ordersPage() {
  if (!requireUser()) return;
  try {
    const page = await api("GET", "/api/v1/me/orders");
    const items = page.items || [];
    $("#orders-empty").hidden = items.length > 0;
    for (const order of items) {
      const tickets = el("ul", { class: "tickets" });
      const refund = el("button", { type: "button", class: "secondary", text: "Refund" });
      refund.hidden = order.status !== "confirmed";
      refund.addEventListener("click", async () => {
        try {
          await api("POST", `/api/v1/orders/${order.id}/refund`, {});
          refund.hidden = true;
          status.textContent = "refunded";
        } catch (error) { fail(error); }
      });
      const status = el("span", { class: "status", text: order.status });
      $("#orders").append(el("li", { class: "order panel" },
        el("p", {}, el("a", { href: `/events/${order.event_id}`, text: "Event" }), " · ",
          money(order.total_cents, order.currency), " · ", status, " · ", when(order.created_at)),
        tickets, refund));
      if (order.status === "confirmed") await renderTickets(order, tickets);
    }
  } catch (error) { fail(error); }
}

// ---- sign in -----------------------------------------------------------------------------

function signIn() {
  const next = new URLSearchParams(location.search).get("next");
  const done = () => { location.href = next && next.startsWith("/") ? next : "/"; };
  $("#login").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    try {
      session.save(await api("POST", "/api/v1/auth/login",
        { email: $("#login-email").value, password: $("#login-password").value }));
      done();
    } catch (error) { fail(error); }
  });
  $("#register").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    try {
      session.save(await api("POST", "/api/v1/auth/register", {
        name: $("#register-name").value, email: $("#register-email").value,
        password: $("#register-password").value, role: $("#register-role").value,
      }));
      done();
    } catch (error) { fail(error); }
  });
}

header();
({ home, event: eventPage, orders: ordersPage, signin: signIn })[page]?.();
