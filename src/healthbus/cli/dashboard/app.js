// healthbus dashboard: live from the state stream over Server-Sent Events.
//
// The server sends one "snapshot" (every current state) and then one "state" event per
// change; EventSource reconnects by itself and each reconnect starts with a fresh
// snapshot. The browser never polls the server: the only timer re-draws countdowns and
// ages from data it already has. Text from the stream is only ever set with textContent.
'use strict';

const TIMELINE_WINDOW_MS = 24 * 3600 * 1000;
const MAX_CHANGES = 12;
const STATES = ['healthy', 'degraded', 'recovering', 'unavailable', 'unknown'];

/** target name -> {event, el, history: Map(seq -> event), configured} */
const targets = new Map();
const container = document.getElementById('targets');
const template = document.getElementById('card-template');
const connEl = document.getElementById('conn');
const emptyEl = document.getElementById('empty');
const summaryEl = document.getElementById('summary');

function setConn(state, text) {
  connEl.dataset.conn = state;
  connEl.textContent = text;
}

function ms(ts) {
  return ts ? Date.parse(ts) : NaN;
}

function shortDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  return `${Math.floor(h / 24)}d`;
}

function age(ts, now) {
  const t = ms(ts);
  if (Number.isNaN(t)) return '';
  return `${shortDuration((now - t) / 1000)} ago`;
}

function countdown(retryAt, now) {
  const t = ms(retryAt);
  if (Number.isNaN(t)) return '—';
  const left = (t - now) / 1000;
  return left <= 0 ? 'due' : `in ${shortDuration(left)}`;
}

function clockTime(ts) {
  const d = new Date(ms(ts));
  return d.toISOString().slice(11, 19) + 'Z';
}

function ensureTarget(name) {
  let t = targets.get(name);
  if (t) return t;
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.target = name;
  el.querySelector('.name').textContent = name;
  t = { event: null, el, history: new Map(), historyLoaded: false };
  targets.set(name, t);
  // Keep cards sorted by name.
  const after = [...container.children].find((c) => c.dataset.target > name);
  container.insertBefore(el, after || null);
  emptyEl.hidden = true;
  // A fleet can have thousands of targets: read a card's history once, when it is first seen.
  if (visibility) visibility.observe(el);
  else loadHistory(name, t);
  return t;
}

const visibility = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      visibility.unobserve(entry.target);
      const name = entry.target.dataset.target;
      loadHistory(name, targets.get(name));
    }
  })
  : null;

async function loadHistory(name, t) {
  const since = '-' + Math.round(TIMELINE_WINDOW_MS / 1000) + 's';
  try {
    const res = await fetch(`/api/history?target=${encodeURIComponent(name)}&since=${since}`);
    if (!res.ok) return;
    for (const ev of await res.json()) t.history.set(ev.seq, ev);
  } catch (err) {
    console.warn('history of', name, err);
  }
  t.historyLoaded = true;
  renderTimeline(t, Date.now());
}

function apply(ev) {
  const t = ensureTarget(ev.target);
  t.history.set(ev.seq, ev);
  if (t.event && t.event.seq >= ev.seq) return;
  t.event = ev;
  render(t, Date.now());
  renderSummary();
}

function render(t, now) {
  const ev = t.event;
  const el = t.el;
  const state = ev ? ev.state : 'unknown';
  el.dataset.state = state;
  el.dataset.seq = ev ? String(ev.seq) : '0';
  const badge = el.querySelector('.state');
  badge.className = `badge state ${state}`;
  badge.textContent = ev && ev.flapping ? `${state} (flapping)` : state;
  if (!ev) {
    el.querySelector('.breaker').textContent = '—';
    el.querySelector('.reason').textContent = 'no verdict yet';
    renderTimes(t, now);
    return;
  }
  el.querySelector('.breaker').textContent = ev.breaker + (ev.attempt ? ` (attempt ${ev.attempt})` : '');
  el.querySelector('.seq').textContent = String(ev.seq);
  el.querySelector('.features').textContent = (ev.features || []).join(', ') || '—';
  el.querySelector('.reason').textContent = ev.reason;
  const body = el.querySelector('.evidence tbody');
  body.replaceChildren();
  for (const probe of Object.keys(ev.evidence || {}).sort()) {
    const e = ev.evidence[probe];
    const row = document.createElement('tr');
    for (const [text, cls] of [[probe, ''], [e.outcome, `outcome-${e.outcome}`], [e.error_kind || '', ''], [age(e.at, now), 'ev-age']]) {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      if (cls === 'ev-age') td.dataset.at = e.at;
      row.appendChild(td);
    }
    body.appendChild(row);
  }
  renderTimes(t, now);
  renderTimeline(t, now);
}

function renderTimes(t, now) {
  const ev = t.event;
  t.el.querySelector('.retry').textContent = ev ? countdown(ev.retry_at, now) : '—';
  t.el.querySelector('.since').textContent = ev ? `${clockTime(ev.at)} (${age(ev.at, now)})` : '—';
  for (const td of t.el.querySelectorAll('td.ev-age')) td.textContent = age(td.dataset.at, now);
}

function renderTimeline(t, now) {
  const events = [...t.history.values()].sort((a, b) => a.seq - b.seq);
  const bar = t.el.querySelector('.bar');
  bar.replaceChildren();
  const start = Math.max(now - TIMELINE_WINDOW_MS, events.length ? ms(events[0].at) : now);
  const span = Math.max(now - start, 1);
  events.forEach((ev, i) => {
    const from = Math.max(ms(ev.at), start);
    const to = i + 1 < events.length ? ms(events[i + 1].at) : now;
    if (to <= start) return;
    const seg = document.createElement('div');
    seg.className = `seg ${ev.state}`;
    seg.style.flexGrow = String(Math.max(to - from, 0) / span);
    seg.title = `${ev.state} from ${clockTime(ev.at)}`;
    bar.appendChild(seg);
  });
  const list = t.el.querySelector('.changes');
  list.replaceChildren();
  for (const ev of events.slice(-MAX_CHANGES).reverse()) {
    const li = document.createElement('li');
    li.dataset.seq = String(ev.seq);
    const to = document.createElement('span');
    to.className = 'to';
    to.textContent = ev.state;
    li.append(`${clockTime(ev.at)} #${ev.seq} ${ev.previous} → `, to, ` — ${ev.reason}`);
    list.appendChild(li);
  }
}

function renderSummary() {
  const counts = {};
  for (const t of targets.values()) {
    const s = t.event ? t.event.state : 'unknown';
    counts[s] = (counts[s] || 0) + 1;
  }
  summaryEl.textContent = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(' · ');
}

function onSnapshot(snap) {
  for (const c of snap.configured || []) {
    const t = ensureTarget(c.name);
    if (!t.event) {
      t.el.querySelector('.features').textContent = (c.features || []).join(', ') || '—';
      render(t, Date.now());
    }
  }
  for (const ev of snap.targets || []) apply(ev);
  emptyEl.hidden = targets.size > 0;
  renderSummary();
}

function connect() {
  const source = new EventSource('/api/events');
  source.addEventListener('snapshot', (m) => {
    setConn('live', 'live');
    onSnapshot(JSON.parse(m.data));
  });
  source.addEventListener('state', (m) => apply(JSON.parse(m.data)));
  source.addEventListener('open', () => setConn('live', 'live'));
  // EventSource retries on its own; say so instead of showing stale data as live.
  source.addEventListener('error', () => setConn('reconnecting', 'reconnecting…'));
}

// Countdowns and ages move with the clock; timelines stretch to "now" less often.
let ticks = 0;
setInterval(() => {
  const now = Date.now();
  ticks += 1;
  for (const t of targets.values()) {
    renderTimes(t, now);
    if (ticks % 15 === 0) renderTimeline(t, now);
  }
}, 1000);

connect();
