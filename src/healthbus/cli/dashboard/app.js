// healthbus dashboard: live from the state stream over Server-Sent Events.
//
// The server sends one "snapshot" (every current state) and then one "state" event per
// change; EventSource reconnects by itself and each reconnect starts with a fresh
// snapshot. The page reads every target's timeline once (/api/timelines, one read of
// the audit stream for all targets) and a target's transitions when it is opened
// (/api/history); it never polls. The only timer re-draws ages, countdowns and the
// timelines' "now" from data it already has. Text from the stream is only ever set with
// textContent.
//
// Built for fleets: each target is one element that is re-rendered only when its state
// changes; ordering and filtering are applied once per animation frame however many
// events arrived, and filtered-out targets are not in the document at all.
'use strict';

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;
/** Problems first: the order rows are listed in, and the order of the counts. */
const STATE_ORDER = ['unavailable', 'recovering', 'degraded', 'unknown', 'healthy'];
const RANK = Object.fromEntries(STATE_ORDER.map((s, i) => [s, i]));
/** Up to this many targets the page starts in the card view, above it in the table view. */
const CARDS_UP_TO = 12;

/** target name -> {name, event, el, features, changes: Map(seq -> {at, state, previous}), before} */
const targets = new Map();
const $ = (id) => document.getElementById(id);
const rowsEl = $('rows');
const mainEl = $('targets');
const template = $('row-template');
const connEl = $('conn');
const emptyEl = $('empty');
const countsEl = $('counts');
const shownEl = $('shown');
const detailEl = $('detail');
const filterName = $('f-name');
const filterState = $('f-state');
const filterFeature = $('f-feature');

const groupsEl = $('groups');
const leadersEl = $('leaders');
/** group name -> its last GroupChanged ([[groups]]: who is in and out, recent latencies) */
const groups = new Map();

const filters = { q: '', state: '', feature: '' };
let view = '';          // '' until chosen (by the user, the URL or the fleet's size)
let selected = null;    // the target whose transitions are open
let layoutOrder = [];   // the elements currently listed, in order
let frameQueued = false;
let needLayout = false;
let firstSnapshot = true;
let timelinesLoaded = false;
const dirty = new Set();
const knownFeatures = new Set();

// ------------------------------------------------------------------ formatting

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

function clockTime(t) {
  return new Date(t).toISOString().slice(11, 19) + 'Z';
}

function dateTime(t) {
  return new Date(t).toISOString().slice(0, 19).replace('T', ' ') + 'Z';
}

function stateOf(t) {
  return t.event ? t.event.state : 'unknown';
}

/** healthy and degraded are available (what a service's is_available() answers). */
function isUp(state) {
  return state === 'healthy' || state === 'degraded';
}

/**
 * When the target's availability last changed (ms), from the changes the page knows (the
 * timelines' last day plus live events): a half-open trial (unavailable -> recovering ->
 * unavailable) or a refresh does not restart it. NaN when no such change is known; then
 * ``before`` (the state a day ago) says it has held for over a day.
 */
function availableSince(t) {
  let since = NaN;
  let previous = t.before;
  for (const [, c] of [...t.changes.entries()].sort((a, b) => a[0] - b[0])) {
    const from = c.previous || previous;
    if (!from || from === 'unknown' || isUp(from) !== isUp(c.state)) since = c.at;
    previous = c.state;
  }
  return since;
}

function sinceText(t, now) {
  if (!t.event) return '—';
  const since = availableSince(t);
  if (!Number.isNaN(since)) return age(new Date(since).toISOString(), now);
  return t.before ? 'over 1d' : '…';
}

// ------------------------------------------------------------------ the model

function ensureTarget(name) {
  let t = targets.get(name);
  if (t) return t;
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.target = name;
  el.querySelector('.name').textContent = name;
  t = { name, event: null, el, features: [], changes: new Map(), before: null };
  targets.set(name, t);
  dirty.add(t);
  needLayout = true;
  return t;
}

function setFeatures(t, features) {
  t.features = features || [];
  for (const f of t.features) {
    if (!knownFeatures.has(f)) {
      knownFeatures.add(f);
      renderFeatureOptions();
    }
  }
}

function apply(ev) {
  if (ev.retired) {  // removed from the configuration: gone from the page
    const gone = targets.get(ev.target);
    if (gone) {
      if (selected === gone) closeDetail();
      targets.delete(ev.target);
      dirty.delete(gone);
      needLayout = true;
      schedule();
    }
    return;
  }
  const t = ensureTarget(ev.target);
  t.changes.set(ev.seq, { at: ms(ev.at), state: ev.state, previous: ev.previous });
  if (t.event && t.event.seq >= ev.seq) return;
  const moved = !t.event || t.event.state !== ev.state;
  t.event = ev;
  if (ev.features && ev.features.length) setFeatures(t, ev.features);
  dirty.add(t);
  if (moved) needLayout = true;
  if (selected === t) addTransition(ev, true);
  schedule();
}

function applyGroup(g) {
  const old = groups.get(g.group);
  if (old && old.seq >= g.seq) return;
  groups.set(g.group, g);
  renderGroups();
}

function renderGroups() {
  groupsEl.hidden = groups.size === 0;
  groupsEl.replaceChildren();
  for (const name of [...groups.keys()].sort()) {
    const g = groups.get(name);
    const el = document.createElement('div');
    el.className = 'group';
    el.dataset.state = g.state;
    const head = document.createElement('span');
    head.className = 'group-head';
    head.textContent = `${g.group} · ${g.state} · ${g.available}/${g.members.length} in · ${g.policy}`;
    el.append(head);
    for (const m of g.members) {
      const member = document.createElement('span');
      member.className = 'member';
      member.dataset.in = m.available ? 'yes' : 'no';
      const latency = m.latency_ms == null ? '' : ` ${m.latency_ms.toFixed(1)} ms`;
      member.textContent = `${m.available ? '+' : '−'}${m.target}${latency}${m.target === g.primary ? ' (primary)' : ''}`;
      el.append(member);
    }
    groupsEl.append(el);
  }
}

/** Who leads each partition (the lease bucket, as `healthbus status` shows it). */
function renderLeaders(list) {
  leadersEl.hidden = list.length === 0;
  leadersEl.replaceChildren();
  for (const l of list) {
    const el = document.createElement('span');
    el.className = 'leader';
    el.title = `lease revision ${l.revision} (it grows with every renewal)`;
    el.textContent = l.partition === 'all' ? `leader ${l.leader}` : `p${l.partition} ${l.leader}`;
    leadersEl.append(el);
  }
}

function onSnapshot(snap) {
  renderLeaders(snap.leaders || []);
  for (const g of snap.groups || []) applyGroup(g);
  for (const c of snap.configured || []) {
    const t = ensureTarget(c.name);
    if (!t.features.length) setFeatures(t, c.features);
  }
  for (const ev of snap.targets || []) apply(ev);
  if (firstSnapshot) {
    firstSnapshot = false;
    if (!view) setView(targets.size > CARDS_UP_TO ? 'table' : 'cards');
    loadTimelines();
  }
  needLayout = true;
  schedule();
}

async function loadTimelines() {
  try {
    const res = await fetch('/api/timelines?since=-24h');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    for (const [name, tl] of Object.entries(body.targets)) {
      const t = targets.get(name);
      if (!t) continue;  // no longer in the stream's current states
      t.before = tl.before;
      let previous = tl.before;
      for (const [seq, at, state] of tl.changes) {
        if (!t.changes.has(seq)) t.changes.set(seq, { at, state, previous });
        previous = state;
      }
    }
  } catch (err) {
    console.warn('timelines', err);
  }
  timelinesLoaded = true;
  for (const t of targets.values()) dirty.add(t);
  schedule();  // the next frame draws every bar, then says 'loaded'
}

// ------------------------------------------------------------------ rendering

function schedule() {
  if (frameQueued) return;
  frameQueued = true;
  requestAnimationFrame(frame);
}

function frame() {
  frameQueued = false;
  const now = Date.now();
  for (const t of dirty) renderRow(t, now);
  dirty.clear();
  if (needLayout) {
    needLayout = false;
    layout();
  }
  renderCounts();
  if (selected) renderDetail(now);
  if (timelinesLoaded && mainEl.dataset.timelines !== 'loaded') {
    // Only now, with every bar drawn: what a reader (or a test) waiting for it sees.
    mainEl.dataset.timelines = 'loaded';
    performance.mark('healthbus-timelines');
  }
  if (!document.body.dataset.ready && !firstSnapshot) {
    document.body.dataset.ready = 'true';
    performance.mark('healthbus-ready');
  }
}

function renderRow(t, now) {
  const ev = t.event;
  const el = t.el;
  const state = stateOf(t);
  el.dataset.state = state;
  el.dataset.seq = ev ? String(ev.seq) : '0';
  const badge = el.querySelector('.state');
  badge.className = `badge state ${state}`;
  badge.textContent = ev && ev.flapping ? `${state} (flapping)` : state;
  el.querySelector('.features').textContent = t.features.join(', ');
  el.querySelector('.reason').textContent = ev ? ev.reason : 'no verdict yet';
  el.querySelector('.reason').title = ev ? ev.reason : '';
  renderTimes(t, now);
  // Drawn from the first read (what the snapshot says: the state and the one before it),
  // and again with the whole day once /api/timelines has answered.
  drawBar(el.querySelector('.tl-hour'), t, now, HOUR_MS);
  drawBar(el.querySelector('.tl-day'), t, now, DAY_MS);
}

function renderTimes(t, now) {
  const ev = t.event;
  const el = t.el;
  const since = el.querySelector('.since');
  setText(since, sinceText(t, now));
  since.title = 'since the availability last changed';
  let breaker = '—';
  if (ev && ev.breaker === 'forced_open' && ev.retry_at) {
    breaker = `maintenance · ends ${countdown(ev.retry_at, now)}`;  // ctl maintenance: ends by itself
  } else if (ev) {
    breaker = ev.breaker + (ev.attempt ? ` #${ev.attempt}` : '');
    // The last half-open trial (or other change within the same availability), apart from "since".
    if (ev.attempt) breaker += ` · tried ${age(ev.at, now)}`;
    if (ev.retry_at) breaker += ` · retry ${countdown(ev.retry_at, now)}`;
    const ramp = rampText(ev.ramp, now);
    if (ramp) breaker += ` · ${ramp}`;
  }
  setText(el.querySelector('.breaker'), breaker);
}

/** "ramp 55% admitted" while a re-admission ramp is in progress (contract §4), else ''. */
function rampText(ramp, now) {
  if (!ramp) return '';
  const elapsed = (now - ms(ramp.started_at)) / 1000;
  if (Number.isNaN(elapsed) || elapsed >= ramp.duration_s) return '';
  const share = ramp.from_share + (1 - ramp.from_share) * Math.max(0, elapsed) / ramp.duration_s;
  const again = ramp.readmission > 1 ? `, re-admission ${ramp.readmission}` : '';
  return `ramp ${Math.round(share * 100)}% admitted${again}`;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Segments of the timeline from now - span to now: [{from, to, state}] (times in ms). */
function segments(t, now, span) {
  const start = now - span;
  const changes = [...t.changes.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
  let state = t.before || (changes.length ? changes[0].previous : stateOf(t));
  let from = start;
  const out = [];
  for (const c of changes) {
    if (c.at > start) {
      if (c.at > from) out.push({ from, to: Math.min(c.at, now), state });
      from = Math.max(c.at, start);
    }
    state = c.state;
  }
  if (now > from) out.push({ from, to: now, state });
  return out.filter((s) => s.to > s.from);
}

/** Drop changes older than ``start`` (keeping the state they left in ``before``). */
function forgetBefore(t, start) {
  const old = [...t.changes.entries()].filter(([, c]) => c.at < start).sort((a, b) => a[0] - b[0]);
  for (const [seq, c] of old) {
    t.before = c.state;
    t.changes.delete(seq);
  }
}

function drawBar(bar, t, now, span) {
  const start = now - span;
  const segs = segments(t, now, span);
  const children = [];
  for (const s of segs) {
    const seg = document.createElement('span');
    seg.className = `seg ${s.state}`;
    // A change of a moment ago is still a visible sliver at the right end.
    seg.style.left = `min(${((s.from - start) / span) * 100}%, 100% - 2px)`;
    seg.style.width = `${((s.to - s.from) / span) * 100}%`;
    seg.title = `${s.state} ${clockTime(s.from)}–${clockTime(s.to)}`;
    children.push(seg);
  }
  bar.replaceChildren(...children);
}

function passes(t) {
  const state = stateOf(t);
  if (filters.state === 'problems' ? state === 'healthy' : filters.state && state !== filters.state) return false;
  if (filters.feature && !t.features.includes(filters.feature)) return false;
  if (filters.q && !t.name.toLowerCase().includes(filters.q)) return false;
  return true;
}

function byProblemsFirst(a, b) {
  return RANK[stateOf(a)] - RANK[stateOf(b)] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

function layout() {
  const shown = [...targets.values()].filter(passes).sort(byProblemsFirst).map((t) => t.el);
  const same = shown.length === layoutOrder.length && shown.every((el, i) => el === layoutOrder[i]);
  if (!same) {
    rowsEl.replaceChildren(...shown);
    layoutOrder = shown;
  }
  emptyEl.hidden = targets.size > 0;
  shownEl.textContent = shown.length === targets.size ? `${targets.size} targets` : `${shown.length} of ${targets.size} shown`;
}

function renderCounts() {
  const counts = Object.fromEntries(STATE_ORDER.map((s) => [s, 0]));
  for (const t of targets.values()) counts[stateOf(t)] += 1;
  if (!countsEl.childElementCount) {
    for (const s of STATE_ORDER) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = `count ${s}`;
      b.dataset.state = s;
      b.addEventListener('click', () => setFilter('state', filters.state === s ? '' : s));
      countsEl.appendChild(b);
    }
  }
  for (const b of countsEl.children) {
    const s = b.dataset.state;
    b.dataset.count = String(counts[s]);
    b.classList.toggle('zero', counts[s] === 0);
    b.classList.toggle('active', filters.state === s);
    setText(b, `${counts[s]} ${s}`);
  }
}

function renderFeatureOptions() {
  const current = filterFeature.value || filters.feature;
  const options = [filterFeature.options[0]];
  for (const f of [...knownFeatures].sort()) {
    const o = document.createElement('option');
    o.value = f;
    o.textContent = f;
    options.push(o);
  }
  filterFeature.replaceChildren(...options);
  filterFeature.value = current;
}

// ------------------------------------------------------------------ the detail panel

function openDetail(name) {
  const t = targets.get(name);
  if (!t) return;
  if (selected) selected.el.classList.remove('selected');
  selected = t;
  t.el.classList.add('selected');
  detailEl.hidden = false;
  detailEl.dataset.target = name;
  detailEl.querySelector('.transitions').replaceChildren();
  renderDetail(Date.now());
  loadTransitions(t);
}

function closeDetail() {
  if (selected) selected.el.classList.remove('selected');
  selected = null;
  detailEl.hidden = true;
  delete detailEl.dataset.target;
}

async function loadTransitions(t) {
  const status = detailEl.querySelector('.transitions-status');
  status.textContent = 'reading the audit log…';
  detailEl.dataset.transitions = 'loading';
  try {
    const res = await fetch(`/api/history?target=${encodeURIComponent(t.name)}&since=-24h`);
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    const events = await res.json();
    if (selected !== t) return;
    const list = detailEl.querySelector('.transitions');
    const live = [...list.children];  // arrived over the event stream while reading
    list.replaceChildren();
    for (const ev of events) addTransition(ev, true);
    for (const li of live.reverse()) {
      if (!list.querySelector(`li[data-seq="${li.dataset.seq}"]`)) list.prepend(li);
    }
    status.textContent = events.length ? '' : 'no changes in the last day';
  } catch (err) {
    status.textContent = `cannot read the audit log: ${err.message}`;
  }
  detailEl.dataset.transitions = 'loaded';
}

function addTransition(ev, newestFirst) {
  const list = detailEl.querySelector('.transitions');
  if (list.querySelector(`li[data-seq="${ev.seq}"]`)) return;
  const li = document.createElement('li');
  li.dataset.seq = String(ev.seq);
  li.dataset.state = ev.state;
  const head = document.createElement('div');
  const to = document.createElement('span');
  to.className = `badge state ${ev.state}`;
  to.textContent = ev.state;
  head.append(`${dateTime(ms(ev.at))} #${ev.seq} ${ev.previous} → `, to);
  const reason = document.createElement('div');
  reason.className = 'why';
  reason.textContent = ev.reason;
  li.append(head, reason);
  if (ev.coordinator) {
    // Who stored it, under which lease (a takeover's catch-up keeps the deciding result's time).
    const by = document.createElement('div');
    by.className = 'by';
    by.textContent = `decided by ${ev.coordinator}` + (ev.term != null ? `, lease term ${ev.term}` : '');
    li.append(by);
  }
  const probes = Object.keys(ev.evidence || {}).sort();
  if (probes.length) {
    const ul = document.createElement('ul');
    ul.className = 'ev';
    for (const probe of probes) {
      const e = ev.evidence[probe];
      const item = document.createElement('li');
      item.className = `outcome-${e.outcome}`;
      item.textContent = `${probe}: ${e.outcome}${e.error_kind ? ` (${e.error_kind})` : ''} at ${clockTime(ms(e.at))}`;
      ul.appendChild(item);
    }
    li.appendChild(ul);
  }
  if (newestFirst) list.prepend(li);
  else list.appendChild(li);
}

function renderDetail(now) {
  const t = selected;
  const ev = t.event;
  const state = stateOf(t);
  detailEl.dataset.state = state;
  detailEl.querySelector('.name').textContent = t.name;
  const badge = detailEl.querySelector('.state');
  badge.className = `badge state ${state}`;
  badge.textContent = ev && ev.flapping ? `${state} (flapping)` : state;
  const ramp = ev ? rampText(ev.ramp, now) : '';
  detailEl.querySelector('.breaker').textContent = ev
    ? ev.breaker + (ev.attempt ? ` (attempt ${ev.attempt})` : '') + (ramp ? ` · ${ramp}` : '')
    : '—';
  detailEl.querySelector('.retry').textContent = ev ? countdown(ev.retry_at, now) : '—';
  const since = availableSince(t);
  detailEl.querySelector('.since').textContent = Number.isNaN(since) ? sinceText(t, now) : `${dateTime(since)} (${age(new Date(since).toISOString(), now)})`;
  detailEl.querySelector('.changed').textContent = ev ? `${dateTime(ms(ev.at))} (${age(ev.at, now)})` : '—';
  detailEl.querySelector('.seq').textContent = ev ? String(ev.seq) : '—';
  detailEl.querySelector('.features').textContent = t.features.join(', ') || '—';
  detailEl.querySelector('.reason').textContent = ev ? ev.reason : 'no verdict yet';
  const body = detailEl.querySelector('.evidence tbody');
  const rows = [];
  for (const probe of Object.keys((ev && ev.evidence) || {}).sort()) {
    const e = ev.evidence[probe];
    const row = document.createElement('tr');
    for (const [text, cls] of [[probe, ''], [e.outcome, `outcome-${e.outcome}`], [e.error_kind || '', ''], [age(e.at, now), '']]) {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      row.appendChild(td);
    }
    rows.push(row);
  }
  body.replaceChildren(...rows);
  drawBar(detailEl.querySelector('.tl-hour'), t, now, HOUR_MS);
  drawBar(detailEl.querySelector('.tl-day'), t, now, DAY_MS);
}

// ------------------------------------------------------------------ filters, view, URL

function setFilter(key, value) {
  filters[key] = key === 'q' ? value.trim().toLowerCase() : value;
  filterName.value = key === 'q' ? value : filterName.value;
  filterState.value = filters.state;
  filterFeature.value = filters.feature;
  saveHash();
  needLayout = true;
  schedule();
}

function setView(v) {
  view = v;
  mainEl.dataset.view = v;
  for (const b of document.querySelectorAll('.views button')) b.classList.toggle('active', b.dataset.view === v);
  saveHash();
}

function saveHash() {
  const params = new URLSearchParams();
  if (filters.state) params.set('state', filters.state);
  if (filters.feature) params.set('feature', filters.feature);
  if (filterName.value.trim()) params.set('q', filterName.value.trim());
  if (view) params.set('view', view);
  const hash = params.toString();
  if (location.hash.slice(1) !== hash) history.replaceState(null, '', hash ? `#${hash}` : location.pathname);
}

function loadHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  filters.state = params.get('state') || '';
  filters.feature = params.get('feature') || '';
  filterName.value = params.get('q') || '';
  filters.q = filterName.value.trim().toLowerCase();
  filterState.value = filters.state;
  if (filters.feature) knownFeatures.add(filters.feature);
  renderFeatureOptions();
  const v = params.get('view');
  if (v === 'table' || v === 'cards') setView(v);
}

// Editing only the URL's # on an open page (or back/forward) applies it.
window.addEventListener('hashchange', () => {
  loadHash();
  needLayout = true;
  schedule();
});
filterName.addEventListener('input', () => setFilter('q', filterName.value));
filterState.addEventListener('change', () => setFilter('state', filterState.value));
filterFeature.addEventListener('change', () => setFilter('feature', filterFeature.value));
$('filters').addEventListener('submit', (e) => e.preventDefault());
for (const b of document.querySelectorAll('.views button')) b.addEventListener('click', () => setView(b.dataset.view));
rowsEl.addEventListener('click', (e) => {
  const row = e.target.closest('.target');
  if (row) openDetail(row.dataset.target);
});
rowsEl.addEventListener('keydown', (e) => {
  const row = e.target.closest('.target');
  if (row && (e.key === 'Enter' || e.key === ' ')) {
    e.preventDefault();
    openDetail(row.dataset.target);
  }
});
$('detail-close').addEventListener('click', closeDetail);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') closeDetail();
});

// ------------------------------------------------------------------ the event stream

function setConn(state, text) {
  connEl.dataset.conn = state;
  connEl.textContent = text;
}

function connect() {
  const source = new EventSource('/api/events');
  source.addEventListener('snapshot', (m) => {
    setConn('live', 'live');
    onSnapshot(JSON.parse(m.data));
  });
  source.addEventListener('state', (m) => apply(JSON.parse(m.data)));
  source.addEventListener('group', (m) => applyGroup(JSON.parse(m.data)));
  source.addEventListener('leaders', (m) => renderLeaders(JSON.parse(m.data)));
  source.addEventListener('open', () => setConn('live', 'live'));
  // EventSource retries on its own; say so instead of showing stale data as live.
  source.addEventListener('error', () => setConn('reconnecting', 'reconnecting…'));
}

// Ages and countdowns move with the clock every second; the timelines' "now" every 30 s.
let ticks = 0;
setInterval(() => {
  const now = Date.now();
  ticks += 1;
  for (const t of targets.values()) {
    if (ticks % 30 === 0) {
      forgetBefore(t, now - DAY_MS);
      dirty.add(t);
    } else {
      renderTimes(t, now);
    }
  }
  if (selected) renderDetail(now);
  if (dirty.size) schedule();
}, 1000);

loadHash();
connect();
