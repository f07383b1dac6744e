// pcipassd's page: see and change dom0 access of PCI functions.
//
// Everything goes through the daemon's own XenAPI (POST /ui/rpc, the
// session in an HttpOnly cookie, the CSRF token in a header), so the page
// can do nothing the API would refuse. Data only ever reaches the DOM
// through textContent. No inline script or style: the CSP forbids them.
'use strict';

const EVENT_CLASSES = ['PCI', 'PGPU', 'host'];
const DRIFT_NAMES = new Set(['PCI_HIDE_DROPPED', 'PCI_IDENTITY_CHANGED', 'PCI_GONE']);

const state = {
  user: '',
  csrf: '',
  perms: new Set(),
  gen: 0, // bumped at every login and logout: stale loops stop
  abort: null, // aborts the event.from in flight at logout
  host: '',
  hostRec: null,
  pcis: {}, // ref -> PCI record
  status: {}, // ref -> dom0 access status literal
  pending: null, // the edit the preview dialog shows
};

const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- the wire

/** A XenAPI failure: `desc` is xapi's ErrorDescription [code, ...params]. */
class ApiError extends Error {
  constructor(desc) {
    super(desc.join(' '));
    this.desc = desc;
    this.code = desc[0];
  }
}

function errorDescription(error) {
  if (Array.isArray(error)) return error.map(String);
  if (error && typeof error === 'object') {
    return [String(error.message), ...(error.data || []).map(String)];
  }
  return [String(error)];
}

async function postJson(url, body, headers = {}, signal = undefined) {
  try {
    return await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(['NETWORK_ERROR', 'pcipassd cannot be reached']);
  }
}

/** Call a XenAPI method; the server adds the session. */
async function rpc(method, params = [], signal = undefined) {
  const res = await postJson('/ui/rpc', { method, params }, { 'X-CSRF-Token': state.csrf }, signal);
  if (res.status === 403) throw new ApiError(['FORBIDDEN', (await res.text()).trim()]);
  let body;
  try {
    body = await res.json();
  } catch {
    throw new ApiError(['HTTP_' + res.status]);
  }
  if (body.error) {
    const err = new ApiError(errorDescription(body.error));
    if (err.code === 'SESSION_INVALID') sessionLost();
    throw err;
  }
  return body.result;
}

const can = (message) => state.perms.has(message.toLowerCase());
const canEdit = () => can('host.preview_dom0_access') && can('host.apply_dom0_access_preview');
const canReboot = () => can('host.reboot') && can('host.disable');

// ------------------------------------------------------------ small helpers

/** Show the last result or error in the live region. */
function say(text, isError = false) {
  const m = $('#message');
  m.textContent = text;
  m.classList.toggle('error', isError);
}

function sayError(what, e) {
  say(`${what}: ${e instanceof ApiError ? e.desc.join(' ') : e}`, true);
}

/** Create an element with a class and text (never HTML). */
function el(tag, cls = '', text = '') {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== '') e.textContent = text;
  return e;
}

function button(cls, text, onClick, describedBy = '') {
  const b = el('button', cls, text);
  b.type = 'button';
  if (describedBy) b.setAttribute('aria-describedby', describedBy);
  b.addEventListener('click', onClick);
  return b;
}

function row(cells) {
  const tr = el('tr');
  for (const c of cells) tr.append(c instanceof Node ? c : el('td', '', String(c ?? '')));
  return tr;
}

function emptyRow(tbody, cols, text) {
  const td = el('td', 'empty', text);
  td.colSpan = cols;
  tbody.append(row([td]));
}

const pciId = (ref) => (state.pcis[ref] ? state.pcis[ref].pci_id : ref);
const pending = (status) => status.endsWith('_on_reboot');
// Hidden from dom0 now or at the next boot: offer the give-back.
const hiddenish = (status) => status === 'disabled' || status === 'disable_on_reboot';

/** A key that finds an element again after its table was rebuilt. */
function focusKey(node) {
  if (!node || node === document.body) return null;
  const tr = node.closest && node.closest('tr[data-pci]');
  if (tr && node.tagName === 'BUTTON') return { node, pci: tr.dataset.pci, cls: node.classList[0] };
  return { node };
}

function refocus(key) {
  if (!key) return;
  let target = key.node;
  if (key.pci && !target.isConnected) {
    target = document.querySelector(`tr[data-pci="${CSS.escape(key.pci)}"] button.${CSS.escape(key.cls)}`)
      || document.querySelector(`tr[data-pci="${CSS.escape(key.pci)}"] button`);
  }
  if (target && target.isConnected && !target.closest('[hidden]')) target.focus();
}

// ------------------------------------------------------------------ dialogs

// Each dialog gives focus back to what opened it when it closes (Esc
// closes a modal <dialog> by itself and fires `close` too).
const openers = new Map();

function openDialog(dialog, opener, focusSel) {
  if (!dialog.open) {
    openers.set(dialog, focusKey(opener || document.activeElement));
    dialog.showModal();
  }
  const f = focusSel ? dialog.querySelector(focusSel) : null;
  if (f) f.focus();
}

for (const d of document.querySelectorAll('dialog')) {
  d.addEventListener('close', () => {
    refocus(openers.get(d));
    openers.delete(d);
  });
}

// ---------------------------------------------------------------- session

function showLogin() {
  state.gen++;
  if (state.abort) state.abort.abort();
  state.abort = null;
  state.csrf = '';
  state.perms = new Set();
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  $('#app').hidden = true;
  $('#who-box').hidden = true;
  $('#login-section').hidden = false;
  $('#password').value = '';
  $('#user').focus();
}

function sessionLost() {
  if ($('#app').hidden) return; // already at the login form
  showLogin();
  say('The session has ended (the host may have rebooted): log in again.', true);
}

function start(session) {
  state.user = session.user;
  state.csrf = session.csrf;
  state.perms = new Set((session.permissions || []).map((p) => String(p).toLowerCase()));
  state.gen++;
  state.abort = new AbortController();
  $('#who').textContent = session.user;
  $('#who-box').hidden = false;
  $('#login-section').hidden = true;
  $('#app').hidden = false;
  $('#login-error').textContent = '';
  renderHostActions();
  refresh().then(() => {
    const first = $('#pcis tbody button');
    if (document.activeElement === document.body && first) first.focus();
  });
  eventLoop(state.gen, state.abort.signal);
}

async function login(ev) {
  ev.preventDefault();
  const submit = $('#login-submit');
  const error = $('#login-error');
  submit.disabled = true;
  error.textContent = '';
  try {
    const res = await postJson('/ui/login', { user: $('#user').value, password: $('#password').value });
    const body = await res.json().catch(() => ({}));
    if (res.ok) {
      $('#password').value = '';
      say(`Logged in as ${body.user}.`);
      start(body);
      return;
    }
    const desc = errorDescription(body.error || ['HTTP_' + res.status]);
    error.textContent = res.status === 429 ? 'Too many attempts: wait a moment and try again.'
      : desc[0] === 'SESSION_AUTHENTICATION_FAILED' ? 'Wrong user name or password.'
        : desc.join(' ');
    $('#password').value = '';
    $('#password').focus();
  } catch (e) {
    error.textContent = e instanceof ApiError ? e.desc.join(' ') : String(e);
  } finally {
    submit.disabled = false;
  }
}

async function logout() {
  try {
    await postJson('/ui/logout', {}, { 'X-CSRF-Token': state.csrf });
  } catch { /* the session is dropped on our side anyway */ }
  showLogin();
  say('Logged out.');
}

async function resume() {
  try {
    const res = await fetch('/ui/session', { credentials: 'same-origin' });
    if (res.ok) {
      start(await res.json());
      return;
    }
  } catch { /* fall through to the login form */ }
  showLogin();
}

// ------------------------------------------------------------ reading state

/** Read everything the page shows. Calls never overlap: a refresh asked
 *  for while one runs makes it run once more. */
let refreshing = null;
let refreshAgain = false;
function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  if (!state.csrf) return Promise.resolve(); // logged out: nothing to read
  refreshing = (async () => {
    do {
      refreshAgain = false;
      const gen = state.gen;
      try {
        if (state.csrf) await load(gen);
      } catch (e) {
        if (gen === state.gen && e.code !== 'SESSION_INVALID') sayError('Reading the host failed', e);
      }
    } while (refreshAgain);
  })().finally(() => { refreshing = null; });
  return refreshing;
}

async function load(gen) {
  const [host] = await rpc('host.get_all');
  const [hostRec, pcis, pgpus] = await Promise.all([
    rpc('host.get_record', [host]),
    rpc('PCI.get_all_records'),
    rpc('PGPU.get_all_records'),
  ]);
  const refs = Object.keys(pcis);
  const statuses = await Promise.all(refs.map((r) => rpc('PCI.get_dom0_access_status', [r])
    .catch((e) => (e.code === 'SESSION_INVALID' ? Promise.reject(e) : `unknown (${e.code})`))));
  // The audit and the drift messages need pool-operator: skip when refused.
  const audit = can('host.get_dom0_access_audit')
    ? await rpc('host.get_dom0_access_audit', [host]).catch(() => null) : null;
  const messages = await rpc('message.get_all_records').catch(() => null);
  if (gen !== state.gen) return; // logged out meanwhile
  state.host = host;
  state.hostRec = hostRec;
  state.pcis = pcis;
  state.status = Object.fromEntries(refs.map((r, i) => [r, statuses[i]]));
  renderPcis();
  renderDisplay(pgpus);
  renderAudit(audit);
  renderDrift(messages);
}

// ---------------------------------------------------------------- rendering

function renderPcis() {
  const focus = focusKey(document.activeElement);
  const tbody = $('#pcis tbody');
  const refs = Object.keys(state.pcis).sort((a, b) => pciId(a).localeCompare(pciId(b)));
  const rows = refs.map((ref) => pciRow(ref));
  // Keep every row that did not change (its buttons stay the same nodes,
  // so a click or the focus is not lost to a refresh).
  const old = [...tbody.querySelectorAll('tr[data-pci]')];
  if (old.length === rows.length && old.every((tr, i) => tr.dataset.pci === rows[i].dataset.pci)) {
    old.forEach((tr, i) => { if (!tr.isEqualNode(rows[i])) tr.replaceWith(rows[i]); });
  } else {
    tbody.replaceChildren(...rows);
  }
  if (!rows.length) emptyRow(tbody, 9, 'No PCI functions.');
  if (focus && focus.pci && !focus.node.isConnected) refocus(focus);
}

function pciRow(ref) {
  const p = state.pcis[ref];
  const status = state.status[ref] || '';
  const tr = el('tr');
  tr.dataset.pci = p.pci_id;
  const addrId = 'addr-' + p.pci_id.replace(/[^0-9a-f]/gi, '-');
  const addr = el('th', 'address', p.pci_id);
  addr.scope = 'row';
  addr.id = addrId;
  const statusCell = el('td', 'status', status);
  const rebootCell = el('td', 'reboot');
  if (pending(status)) rebootCell.append(el('span', 'pending', 'reboot pending'));
  const deps = (p.dependencies || []).filter((d) => d !== ref);
  tr.append(addr, ...[p.class_name, p.vendor_name, p.device_name, p.driver_name].map((t) => el('td', '', t || '')),
    statusCell, rebootCell, el('td', 'deps', deps.map(pciId).join(' ')));

  const actions = el('td', 'actions');
  actions.append(button('readiness', 'Readiness', (e) => showReadiness(ref, e.currentTarget), addrId));
  if (canEdit()) {
    actions.append(hiddenish(status)
      ? button('unhide', 'Give back to dom0', (e) => preview([ref], true, e.currentTarget), addrId)
      : button('hide', 'Hide from dom0', (e) => preview([ref], false, e.currentTarget), addrId));
    if (deps.length) {
      // The whole device: this function and those that belong with it.
      const set = [ref, ...deps.filter((d) => state.pcis[d])];
      const st = set.map((r) => state.status[r] || '');
      if (st.some((s) => !hiddenish(s))) {
        actions.append(button('hide-device', 'Hide device from dom0', (e) => preview(set, false, e.currentTarget), addrId));
      }
      if (st.some(hiddenish)) {
        actions.append(button('unhide-device', 'Give device back to dom0', (e) => preview(set, true, e.currentTarget), addrId));
      }
    }
  }
  tr.append(actions);
  return tr;
}

function renderDisplay(pgpus) {
  $('#host-name').textContent = state.hostRec.name_label ? `on ${state.hostRec.name_label}` : '';
  $('#display').textContent = state.hostRec.display || '';
  $('#host-enabled').textContent = state.hostRec.enabled === false ? 'disabled (no new VMs start)' : 'enabled';
  const tbody = $('#pgpus tbody');
  const rows = Object.values(pgpus || {}).map((g) => {
    const p = state.pcis[g.PCI] || {};
    return row([p.pci_id || g.PCI, p.device_name || '', g.dom0_access || '', g.is_system_display_device ? 'yes' : 'no']);
  });
  rows.sort((a, b) => a.firstChild.textContent.localeCompare(b.firstChild.textContent));
  tbody.replaceChildren(...rows);
  if (!rows.length) emptyRow(tbody, 4, 'No GPUs.');
}

function renderAudit(records) {
  const tbody = $('#audit tbody');
  const note = $('#audit-note');
  if (!records) {
    tbody.replaceChildren();
    emptyRow(tbody, 8, 'Your role cannot read the audit.');
    note.textContent = '';
    return;
  }
  // Oldest first from the API: show the newest 100, newest first.
  const newest = records.slice(-100).reverse();
  tbody.replaceChildren(...newest.map((r) => row([r.seq, r.time, r.kind, r.user, r.call,
    r.functions, r.outcome, r.files])));
  if (!newest.length) emptyRow(tbody, 8, 'No records yet.');
  note.textContent = records.length ? `Hash chain: ${records[records.length - 1].chain}.` : '';
}

function renderDrift(messages) {
  const drift = Object.values(messages || {}).filter((m) => DRIFT_NAMES.has(m.name))
    .sort((a, b) => String(b.timestamp).localeCompare(String(a.timestamp)));
  $('#drift-section').hidden = messages === null;
  const tbody = $('#drift tbody');
  tbody.replaceChildren(...drift.map((m) => row([m.timestamp, m.name, m.priority, m.body])));
  if (!drift.length) emptyRow(tbody, 4, 'No drift.');
}

function renderHostActions() {
  const box = $('#host-actions');
  box.replaceChildren();
  if (canReboot()) {
    box.append(button('', 'Reboot host…', (e) => openDialog($('#reboot-confirm'), e.currentTarget, '#reboot-no')));
    box.firstChild.id = 'reboot';
  }
}

// ---------------------------------------------------------------- readiness

// Shown first; the other keys follow in alphabetical order.
const READINESS_FIRST = ['verdict', 'reasons', 'notes', 'dom0_access', 'driver'];

async function showReadiness(ref, opener) {
  let report;
  try {
    report = await rpc('PCI.get_passthrough_readiness', [ref]);
  } catch (e) {
    sayError(`Readiness of ${pciId(ref)}`, e);
    return;
  }
  $('#readiness-title').textContent = `Readiness of ${pciId(ref)}`;
  const keys = Object.keys(report).sort((a, b) => {
    const ia = READINESS_FIRST.indexOf(a);
    const ib = READINESS_FIRST.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const dl = $('#readiness-list');
  dl.replaceChildren();
  for (const k of keys) {
    dl.append(el('dt', '', k), el('dd', k === 'verdict' ? `verdict-${report[k]}` : '', report[k] || '(none)'));
  }
  openDialog($('#readiness'), opener, '#readiness-close');
}

// ---------------------------------------------------- dry run, then the edit

/** Preview hiding (enabled=false) or giving back (enabled=true) `refs`,
 *  and show the diff; the edit is made only from the dialog's buttons. */
async function preview(refs, enabled, opener) {
  let p;
  try {
    p = await rpc('host.preview_dom0_access', [state.host, refs, enabled]);
  } catch (e) {
    if ($('#preview').open) $('#preview').close(); // a re-preview refused now
    if (e.code !== 'SESSION_INVALID') {
      sayError(`${enabled ? 'Giving back' : 'Hiding'} ${refs.map(pciId).join(' ')} is refused`, e);
    }
    return;
  }
  state.pending = { refs, enabled, token: p.token };
  const names = refs.map(pciId).join(', ');
  $('#preview-title').textContent = enabled ? 'Give back to dom0: dry run' : 'Hide from dom0: dry run';
  $('#preview-what').textContent = enabled
    ? `Give ${names} back to dom0.`
    : `Hide ${names} from dom0 (for passthrough to a VM).`;
  showDiff(p.diff || '(the boot configuration does not change)');
  const notes = $('#preview-notes');
  notes.replaceChildren(...previewNotes(p, enabled).map((t) => el('li', '', t)));
  $('#apply-next-boot').disabled = false;
  $('#apply-now').disabled = false;
  openDialog($('#preview'), opener, '#preview-cancel');
}

/** The diff, one span a line so app.css can colour what is added and
 *  removed (text only: the pre's text stays the diff, byte for byte). */
function showDiff(diff) {
  const lines = diff.split(/(?<=\n)/);
  $('#preview-diff').replaceChildren(...lines.map((line) => {
    const kind = /^(\+\+\+|---) /.test(line) ? 'file' : line[0] === '+' ? 'add'
      : line[0] === '-' ? 'del' : line.startsWith('@@') ? 'hunk' : '';
    return el('span', kind, line);
  }));
}

function previewNotes(p, enabled) {
  const notes = [
    `At the next boot: the boot configuration is edited now and the change takes effect when the host reboots (a reboot is needed).`,
    `Now: the same edit, and the functions are ${enabled ? 'given back to their dom0 drivers' : 'moved to xen-pciback'} at once (no reboot needed).`,
  ];
  const rebuild = (p.rebuild || '').trim();
  notes.push(rebuild === '' || rebuild === 'false' ? 'No initramfs rebuild.'
    : rebuild === 'true' ? 'The initramfs is rebuilt.' : `The initramfs is rebuilt: ${rebuild}`);
  notes.push(p.hidden_after ? `Hidden at the next boot: ${p.hidden_after}` : 'Nothing is hidden at the next boot.');
  if (p.hide_value) notes.push(`xen-pciback.hide after: ${p.hide_value}`);
  if (p.binary) notes.push(`Binary files that change too: ${p.binary}`);
  if (p.exact === 'false') notes.push('The diff may not be exactly what the edit writes:');
  for (const line of (p.unforeseen || '').split('\n')) if (line.trim()) notes.push(`Not foreseen: ${line}`);
  return notes;
}

async function apply(now) {
  const job = state.pending;
  if (!job) return;
  const dialog = $('#preview');
  const buttons = [$('#apply-next-boot'), $('#apply-now')];
  buttons.forEach((b) => { b.disabled = true; });
  $('#preview-stale').hidden = true;
  try {
    const result = await rpc('host.apply_dom0_access_preview',
      [state.host, job.refs, job.enabled, now, job.token]);
    state.pending = null;
    dialog.close();
    say(Object.entries(result).map(([ref, st]) => `${pciId(ref)}: ${st}`).join(', ') || 'Done.');
  } catch (e) {
    if (e.code === 'DOM0_ACCESS_PREVIEW_STALE') {
      // Something edited the files since the preview: show the new one.
      await preview(job.refs, job.enabled, null);
      $('#preview-stale').hidden = false;
      say('The boot configuration changed since the preview: check the new dry run.', true);
      return;
    }
    dialog.close();
    if (e.code !== 'SESSION_INVALID') sayError('The edit failed', e);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  refresh();
}

// ------------------------------------------------------------------- reboot

async function reboot() {
  const dialog = $('#reboot-confirm');
  $('#reboot-yes').disabled = true;
  try {
    say('Disabling the host…');
    await rpc('host.disable', [state.host]);
    say('Rebooting the host…');
    await rpc('host.reboot', [state.host]);
    dialog.close();
    say('The host is rebooting: log in again once it is back.');
  } catch (e) {
    dialog.close();
    // A real host may go down before it answers: the event loop retries.
    if (e.code === 'NETWORK_ERROR') say('The host is rebooting: the page reconnects when it is back.');
    else if (e.code !== 'SESSION_INVALID') sayError('The reboot failed', e);
  } finally {
    $('#reboot-yes').disabled = false;
  }
  refresh();
}

// -------------------------------------------------------------- live updates

/** Follow the host through event.from: every time it returns (events, or
 *  its 30 s timeout), read the statuses again, so an edit made outside
 *  the page (xen-cmdline by hand) shows without a reload. */
async function eventLoop(gen, signal) {
  let token = '';
  while (gen === state.gen) {
    try {
      const r = await rpc('event.from', [EVENT_CLASSES, token, 30], signal);
      if (gen !== state.gen) return;
      token = r.token;
      await refresh();
    } catch (e) {
      if (gen !== state.gen || e.name === 'AbortError' || e.code === 'SESSION_INVALID') return;
      if (e.code === 'EVENTS_LOST' || e.code === 'EVENT_FROM_TOKEN_PARSE_FAILURE') token = '';
      await sleep(2000);
      // Back after a reboot: this read meets SESSION_INVALID, which shows the login form.
      if (gen === state.gen && e.code === 'NETWORK_ERROR') refresh();
    }
  }
}

// --------------------------------------------------------------------- wire up

$('#login').addEventListener('submit', login);
$('#logout').addEventListener('click', logout);
$('#apply-next-boot').addEventListener('click', () => apply(false));
$('#apply-now').addEventListener('click', () => apply(true));
$('#preview-cancel').addEventListener('click', () => { state.pending = null; $('#preview').close(); });
$('#readiness-close').addEventListener('click', () => $('#readiness').close());
$('#reboot-no').addEventListener('click', () => $('#reboot-confirm').close());
$('#reboot-yes').addEventListener('click', reboot);
resume();
