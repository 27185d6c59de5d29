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
  const organizes = user && (user.role === "organizer" || user.role === "admin");
  for (const link of document.querySelectorAll("[data-needs-organizer]")) link.hidden = !organizes;
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

  // Cities for "near a city", loaded once when the field is first used.
  let cities = null;
  async function loadCities() {
    if (cities) return cities;
    const text = await (await fetch("/assets/cities.csv")).text();
    cities = new Map();
    for (const line of text.split("\n").slice(1)) {
      const [, name, country, lat, lon] = line.split(",");
      if (name && lat && lon) cities.set(`${name}, ${country}`, { lat: Number(lat), lon: Number(lon) });
    }
    $("#cities").replaceChildren(...[...cities.keys()].map((key) => el("option", { value: key })));
    return cities;
  }
  form.city.addEventListener("focus", loadCities, { once: true });
  form.city.addEventListener("change", async () => {
    const value = form.city.value.trim();
    if (!value) { here = null; $("#where").textContent = ""; return; }
    const known = await loadCities();
    const exact = known.get(value)
      || [...known.entries()].find(([key]) => key.toLowerCase().startsWith(value.toLowerCase()))?.[1];
    if (!exact) { flash(`No city called "${value}" here; pick one from the list.`); return; }
    flash("");
    here = exact;
    $("#near-me").setAttribute("aria-pressed", "false");
    $("#where").textContent = `Near ${value}`;
    if (!form.radius.value) form.radius.value = 50;
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
      $("#watch-link").href = `/events/${encodeURIComponent(eventId)}/watch`;
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


// ---- organizer: venues, events ----------------------------------------------------------

function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : undefined;
}

async function organizerPage() {
  if (!requireUser()) return;
  const user = session.user;
  if (!user || (user.role !== "organizer" && user.role !== "admin")) {
    flash("Only organizers can build venues and create events. Create an organizer account to start.");
    return;
  }
  const sections = $("#sections");
  let venues = [];

  async function loadMine() {
    try {
      const page = await api("GET", "/api/v1/events?mine=true&limit=100");
      const list = $("#mine");
      list.replaceChildren();
      $("#mine-empty").hidden = page.items.length > 0;
      for (const event of page.items) {
        list.append(el("li", { class: "result" },
          el("a", { href: `/organizer/events/${event.id}`, class: "title", text: event.title }),
          el("p", { class: "muted", text: `${event.status} · ${when(event.starts_at)} · ${event.venue.name}` })));
      }
    } catch (error) { fail(error); }
  }

  async function loadVenues() {
    try {
      venues = (await api("GET", "/api/v1/venues?limit=100")).items;
      const select = $("#event-venue");
      select.replaceChildren(...venues.map((venue) => el("option", { value: venue.id, text: `${venue.name}, ${venue.city}` })));
      showTiers();
    } catch (error) { fail(error); }
  }

  function addSection(kind) {
    const index = sections.children.length + 1;
    const id = `section-${index}-${Date.now()}`;
    const box = el("fieldset", { class: "panel section", "data-kind": kind },
      el("legend", { text: kind === "seated" ? "Seated section" : "Standing area" }),
      el("div", { class: "search" },
        el("div", { class: "field" }, el("label", { for: `${id}-name`, text: "Section name" }),
          el("input", { id: `${id}-name`, class: "section-name", required: true, value: kind === "seated" ? `Block ${index}` : "Standing" })),
        kind === "seated"
          ? el("div", { class: "field" }, el("label", { for: `${id}-rows`, text: "Rows" }),
            el("input", { id: `${id}-rows`, class: "section-rows", type: "number", min: 1, max: 200, value: 5 }))
          : el("div", { class: "field" }, el("label", { for: `${id}-capacity`, text: "Capacity" }),
            el("input", { id: `${id}-capacity`, class: "section-capacity", type: "number", min: 1, value: 500 })),
        kind === "seated"
          ? el("div", { class: "field" }, el("label", { for: `${id}-seats`, text: "Seats per row" }),
            el("input", { id: `${id}-seats`, class: "section-seats", type: "number", min: 1, max: 1000, value: 12 }))
          : null,
        el("button", { type: "button", class: "secondary remove", text: "Remove" })));
    box.querySelector(".remove").addEventListener("click", () => { box.remove(); preview(); });
    box.addEventListener("input", preview);
    sections.append(box);
    preview();
  }

  function venueSections() {
    return [...sections.children].map((box) => {
      const name = box.querySelector(".section-name").value.trim();
      if (box.dataset.kind === "standing") {
        return { name, capacity: Number(box.querySelector(".section-capacity").value) };
      }
      const rows = Number(box.querySelector(".section-rows").value);
      const seats = Number(box.querySelector(".section-seats").value);
      return { name, rows: Array.from({ length: rows }, (_, i) => ({ label: String.fromCharCode(65 + (i % 26)) + (i >= 26 ? Math.floor(i / 26) : ""), seats })) };
    });
  }

  function preview() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    let y = 4;
    let width = 200;
    let seats = 0;
    for (const section of venueSections()) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", 4); label.setAttribute("y", y + 12);
      label.setAttribute("class", "section-label");
      label.textContent = section.capacity ? `${section.name} (standing, ${section.capacity})` : section.name;
      svg.append(label);
      y += 18;
      for (const row of section.rows || []) {
        for (let n = 0; n < Math.min(row.seats, 60); n++) {
          const seat = document.createElementNS(ns, "rect");
          seat.setAttribute("x", 20 + n * 8); seat.setAttribute("y", y);
          seat.setAttribute("width", 6); seat.setAttribute("height", 6);
          seat.setAttribute("class", "seat available");
          svg.append(seat);
          width = Math.max(width, 30 + n * 8);
        }
        seats += row.seats;
        y += 8;
      }
      y += 6;
    }
    svg.setAttribute("viewBox", `0 0 ${width} ${y}`);
    svg.setAttribute("width", Math.min(width * 2, 940));
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `Preview: ${seats} seats`);
    $("#venue-preview").replaceChildren(svg);
  }

  function showTiers() {
    const venue = venues.find((v) => v.id === $("#event-venue").value);
    const tiers = $("#tiers");
    tiers.replaceChildren();
    for (const section of venue ? venue.sections : []) {
      const id = `tier-${section.name.replace(/\W+/g, "-")}`;
      tiers.append(el("div", { class: "field" },
        el("label", { for: id, text: `${section.name} price` }),
        el("input", { id, class: "tier-price", "data-section": section.name, type: "number", min: 0, step: "0.01", value: "50.00", required: true })));
    }
  }

  $("#add-seated").addEventListener("click", () => addSection("seated"));
  $("#add-standing").addEventListener("click", () => addSection("standing"));
  $("#event-venue").addEventListener("change", showTiers);
  addSection("seated");

  $("#venue-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    try {
      flash("");
      const venue = await api("POST", "/api/v1/venues", {
        name: $("#venue-name").value, city: $("#venue-city").value, country: $("#venue-country").value,
        lat: Number($("#venue-lat").value), lon: Number($("#venue-lon").value), sections: venueSections(),
      });
      flash(`Venue "${venue.name}" created.`, "ok");
      await loadVenues();
      $("#event-venue").value = venue.id;
      showTiers();
      $("#event-title").focus();
    } catch (error) { fail(error); }
  });

  $("#event-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const currency = $("#event-currency").value.trim().toUpperCase();
    const body = {
      title: $("#event-title").value, description: $("#event-description").value,
      venue_id: $("#event-venue").value, category: $("#event-category").value,
      starts_at: isoFromLocal($("#event-starts").value), ends_at: isoFromLocal($("#event-ends").value),
      price_tiers: [...document.querySelectorAll(".tier-price")].map((input) => ({
        name: input.dataset.section, price_cents: Math.round(Number(input.value) * 100), currency, sections: [input.dataset.section],
      })),
      waiting_room: { enabled: $("#event-room").checked, admit_per_minute: Number($("#event-rate").value) },
      streaming: { enabled: $("#event-streaming").checked },
    };
    const onSale = isoFromLocal($("#event-onsale").value);
    if (onSale) body.on_sale_at = onSale;
    try {
      flash("");
      const event = await api("POST", "/api/v1/events", body);
      location.href = `/organizer/events/${event.id}`;
    } catch (error) { fail(error); }
  });

  loadMine();
  loadVenues();
}

async function dashboardPage() {
  if (!requireUser()) return;
  const eventId = decodeURIComponent(location.pathname.split("/")[3] || "");
  let event = null;
  const statuses = new Map();
  let prices = new Map();
  let ga = [];

  function render() {
    let sold = 0;
    let held = 0;
    let revenue = 0;
    for (const [seat, status] of statuses) {
      if (status === "sold") { sold += 1; revenue += prices.get(seat) || 0; }
      if (status === "held") held += 1;
    }
    for (const area of ga) {
      const tier = event.price_tiers.find((t) => t.sections.includes(area.section));
      const taken = area.capacity - area.available;
      sold += taken;
      revenue += taken * (tier ? tier.price_cents : 0);
    }
    $("#sold").textContent = String(sold);
    $("#held").textContent = String(held);
    $("#revenue").textContent = money(revenue, event.currency);
  }

  async function snapshot() {
    const seats = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}/seats`);
    statuses.clear();
    prices = new Map(seats.seats.map((seat) => [seat.id, seat.price_cents]));
    for (const seat of seats.seats) statuses.set(seat.id, seat.status);
    ga = seats.general_admission || [];
    render();
    return seats.version;
  }

  let source = null;
  async function follow() {
    if (source) source.close();
    const version = await snapshot();
    // A draft's seat channel is private to its organizer; follow it once published.
    if (event.status !== "published") return;
    source = new EventSource(`/api/v1/push/sse?channel=${encodeURIComponent(`event:${eventId}:seats`)}&since=${version}`);
    source.addEventListener("seats", async (message) => {
      const change = JSON.parse(message.data).data;
      for (const seat of change.seat_ids || []) statuses.set(seat, change.status);
      if (change.general_admission) await snapshot(); else render();
    });
    source.addEventListener("reset", () => { source.close(); follow(); });
  }

  // The room's figures: read once, then pushed on the organizer's own channel as they change.
  async function queue() {
    if (!event.waiting_room.enabled) { $("#queue").textContent = "no waiting room"; return; }
    try {
      const stats = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}/queue`);
      $("#queue").textContent = `${stats.waiting} waiting (${stats.state})`;
    } catch (error) { $("#queue").textContent = error.message; }
    const mine = `user:${session.user.id}`;
    const updates = new EventSource(`/api/v1/push/sse?channel=${encodeURIComponent(mine)}&access_token=${encodeURIComponent(session.token)}`);
    updates.addEventListener("queue.stats", (message) => {
      const stats = JSON.parse(message.data).data;
      if (stats.event_id === eventId) $("#queue").textContent = `${stats.waiting} waiting (${stats.state})`;
    });
  }

  function showStatus() {
    $("#meta").textContent = `${event.status} · ${when(event.starts_at)} · ${event.venue.name}, ${event.venue.city}`;
    $("#publish").hidden = event.status !== "draft";
    $("#cancel").hidden = event.status === "cancelled";
  }

  try {
    event = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}`);
    $("#title").textContent = event.title;
    $("#public-link").href = `/events/${event.id}`;
    showStatus();
    await follow();
    queue();
  } catch (error) { fail(error); }

  $("#publish").addEventListener("click", async () => {
    try {
      event = await api("POST", `/api/v1/events/${eventId}/publish`, {});
      showStatus();
      flash("Published: fans can find it now.", "ok");
      await follow();
    }
    catch (error) { fail(error); }
  });
  $("#cancel").addEventListener("click", async () => {
    if (!confirm("Cancel this event and refund every order?")) return;
    try { event = await api("POST", `/api/v1/events/${eventId}/cancel`, {}); showStatus(); flash("Cancelled; orders are refunded.", "ok"); }
    catch (error) { fail(error); }
  });
  $("#checkin").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const result = $("#checkin-result");
    try {
      await api("POST", `/api/v1/events/${eventId}/checkin`, { code: $("#code").value.trim() });
      result.textContent = "Checked in: welcome!";
      result.className = "ok";
    } catch (error) {
      result.textContent = error.code === "already_checked_in" ? "Already checked in." : error.message;
      result.className = "bad";
    }
    $("#code").select();
  });
}

// ---- sign in -----------------------------------------------------------------------------

// Where `next` may lead after signing in: a path on this site, or home. A fan who has just
// typed their password must not be sent elsewhere: `//host` and `/\host` are other sites to a
// browser (and the URL parser drops tabs and newlines, so `/\t/host` is too), hence the check
// on the origin the URL actually resolves to, not on the string.
function safeNext(next, origin) {
  if (!next || !next.startsWith("/")) return "/";
  try {
    const url = new URL(next, origin);
    return url.origin === origin ? url.pathname + url.search + url.hash : "/";
  } catch {
    return "/";
  }
}

function signIn() {
  const next = new URLSearchParams(location.search).get("next");
  const done = () => { location.href = safeNext(next, location.origin); };
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

// ---- watching a live show -------------------------------------------------------------

// True once the master playlist and every playlist it names list two segments: a live player
// handed a playlist that is still being written (or missing its audio) gives up.
async function playlistsReady(masterUrl) {
  const text = async (url) => {
    const response = await fetch(url).catch(() => null);
    return response && response.ok ? response.text() : null;
  };
  const master = await text(masterUrl);
  if (!master) return false;
  const base = masterUrl.slice(0, masterUrl.lastIndexOf("/") + 1);
  const names = [...master.matchAll(/URI="([^"]+)"/g)].map((match) => match[1])
    .concat(master.split("\n").filter((line) => line && !line.startsWith("#")));
  for (const name of names) {
    const playlist = await text(base + name.trim());
    if (!playlist || (playlist.match(/#EXTINF/g) || []).length < 2) return false;
  }
  return names.length > 0;
}

// The player is hls.js (bundled as /assets/player.js, loaded here alone), or the browser's own
// HLS where it lacks Media Source Extensions: the stream endpoint hands out a playback URL whose
// token is in the path, so the playlists' relative URLs carry it along.
async function watchPage() {
  if (!requireUser()) return;
  const eventId = decodeURIComponent(location.pathname.split("/")[2] || "");
  const player = $("#player");
  let playing = null;
  const labels = { idle: "The show has not started yet.", live: "Live now", ended: "The show has ended." };
  const { play } = await import("/assets/player.js");
  try {
    const event = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}`);
    document.title = `${event.title} · live · Marquee`;
    $("#title").textContent = event.title;
  } catch (error) { fail(error); }
  $("#watch").setAttribute("aria-busy", "false");
  async function check() {
    let stream;
    try {
      stream = await api("GET", `/api/v1/events/${encodeURIComponent(eventId)}/stream`);
    } catch (error) {
      $("#stream-status").textContent = error.status === 403 ? "The stream is for ticket holders of this event." : error.message;
      return;
    }
    $("#stream-status").textContent = labels[stream.status] || stream.status;
    $("#stream-status").dataset.status = stream.status;
    $("#stream-note").textContent = stream.problem || "";
    if (stream.status === "live" && !playing) {
      // The show is live from the publisher's first frame; its playlist follows a segment later.
      const ready = await playlistsReady(stream.hls_url);
      if (!ready) {
        $("#stream-status").textContent = "Live — starting…";
        return;
      }
      // When the show ends the player plays out what it has: the playlists end with the show.
      const started = play(player, stream.hls_url, (problem) => { $("#player-note").textContent = problem || ""; });
      if (!started) {
        $("#stream-note").textContent = "This browser cannot play HLS; open the DASH URL in a DASH player: " + stream.dash_url;
        return;
      }
      playing = stream.hls_url;
      player.dataset.source = stream.hls_url;
      player.hidden = false;
    }
  }
  await check();
  setInterval(check, 2000);
}

header();
({ home, event: eventPage, watch: watchPage, orders: ordersPage, signin: signIn, organizer: organizerPage, dashboard: dashboardPage })[page]?.();
