// The operations dashboard: instances, their counts and history, changing live.
//
// Everything goes through the GraphQL API with the signed-in user's token (HTTP for queries and
// mutations, ONE `instanceStatusChanges` subscription over graphql-ws for live changes), so the page
// never sees more than the token may. What it offers follows `me { permissions }`; the server still
// decides. Every string from the API is set with textContent, never parsed as HTML.
import { authorizeUrl, endSessionUrl, finishSignIn } from './pkce.js';

const config = JSON.parse(document.getElementById('dashboard-config').textContent);
const TOKEN_KEY = 'opencsp.token';
const ID_TOKEN_KEY = 'opencsp.idToken';
const STATUSES = ['PENDING', 'PROVISIONING', 'CONFIGURING', 'ACTIVE', 'FAILED', 'DELETING'];
const FEED_LENGTH = 20;
// What an ACTIVE instance's VM is doing: its power state, or the day-2 task under way.
const POWER_TEXT = { RUNNING: 'Running', STOPPED: 'Stopped', UNKNOWN: 'Power unknown' };
const TASK_TEXT = { STARTING: 'Starting…', STOPPING: 'Stopping…', REBOOTING: 'Rebooting…', RESIZING: 'Resizing…' };
const ACTION_PERMISSIONS = ['instance:delete', 'instance:retry', 'instance:power'];
const PAGE_SIZE = 100;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  can: new Set(),
  instances: new Map(), // id -> instance
  rows: new Map(), // id -> <tr>
  open: new Set(), // ids whose timeline is shown
  client: null,
  unsubscribe: null,
  everConnected: false,
  signingOut: false,
  catalog: null,
};

// ---- small DOM helpers ----------------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function label(status) {
  return status.charAt(0) + status.slice(1).toLowerCase();
}

function age(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// ---- connection state and notices ---------------------------------------------------------------

const CONNECTION_TEXT = {
  'signed-out': 'Signed out',
  connecting: 'Connecting…',
  live: 'Live',
  offline: 'Offline',
  expired: 'Token expired',
};

function setConnection(kind, text = CONNECTION_TEXT[kind]) {
  const pill = $('connection');
  pill.dataset.state = kind;
  pill.textContent = text;
  document.body.dataset.connection = kind;
}

function notice(text) {
  const box = $('notice');
  box.textContent = text || '';
  box.hidden = !text;
}

// ---- the API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // offline | unauthenticated | error
  }
}

async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch(config.graphql, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Accept: 'application/graphql-response+json, application/json',
        Authorization: `Bearer ${state.token}`,
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError('offline', 'The gateway cannot be reached.');
  }
  const body = await response.json().catch(() => ({}));
  const message = body.errors?.[0]?.message || `HTTP ${response.status}`;
  if (response.status === 401) throw new ApiError('unauthenticated', message);
  if (!body.data) throw new ApiError('error', message);
  return body.data;
}

function instanceFields() {
  const network = state.can.has('instance:read:network') ? ' ipAddress hostname' : '';
  return `id name ownerSub ownerName flavor image status statusMessage powerState task createdAt version${network}`;
}

// ---- sign-in ----------------------------------------------------------------------------------------

function redirectUri() {
  return new URL('/dashboard', window.location.href).toString();
}

function acceptToken(text) {
  // Accept what people paste: the bare token, "Bearer …", or GraphiQL's {"Authorization": "Bearer …"}.
  let value = text.trim();
  try {
    const parsed = JSON.parse(value);
    if (parsed && typeof parsed.Authorization === 'string') value = parsed.Authorization;
  } catch {
    // not JSON: the token itself
  }
  return value.replace(/^Bearer\s+/i, '').trim();
}

function signIn(token, idToken = null) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  if (idToken) sessionStorage.setItem(ID_TOKEN_KEY, idToken);
  notice('');
  start();
}

function showSignIn(message = '') {
  stopLive();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('who').hidden = true;
  const panel = $('sign-in');
  panel.replaceChildren(h('h2', { id: 'sign-in-title', text: 'Sign in' }));
  if (message) panel.append(h('p', { class: 'lead', text: message }));
  if (config.oidc) {
    panel.append(
      h('button', {
        type: 'button',
        id: 'oidc-sign-in',
        text: 'Sign in with your organisation',
        onclick: async () => window.location.assign(await authorizeUrl(config.oidc, redirectUri())),
      }),
    );
  }
  if (config.devRoles) {
    const select = h('select', { id: 'dev-role', name: 'role' }, ...config.devRoles.map((role) => h('option', { value: role, text: role })));
    select.value = config.devRoles.includes('user') ? 'user' : config.devRoles[0];
    const error = h('p', { class: 'field-error', id: 'dev-error', role: 'alert' });
    panel.append(
      h(
        'form',
        {
          id: 'dev-sign-in',
          class: 'card',
          onsubmit: async (event) => {
            event.preventDefault();
            error.textContent = '';
            try {
              const response = await fetch('/dev/token', {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ role: select.value }),
              });
              const body = await response.json();
              if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
              signIn(body.token);
            } catch (failure) {
              error.textContent = `No dev token: ${failure.message}`;
            }
          },
        },
        h('h3', { text: 'Dev mode' }),
        h('label', { for: 'dev-role', text: 'Role' }),
        h('div', { class: 'inline' }, select, h('button', { type: 'submit', text: 'Sign in as this role' })),
        h('p', { class: 'hint', text: 'Tokens from the gateway’s local dev issuer; production has none.' }),
        error,
      ),
    );
  }
  const input = h('textarea', {
    id: 'token-input',
    name: 'token',
    rows: 3,
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'token-hint',
    placeholder: 'eyJ… (or Bearer eyJ…, or GraphiQL’s headers)',
  });
  panel.append(
    h(
      'form',
      {
        id: 'token-sign-in',
        class: 'card',
        onsubmit: (event) => {
          event.preventDefault();
          const token = acceptToken(input.value);
          if (token) signIn(token);
        },
      },
      h('h3', { text: 'Access token' }),
      h('label', { for: 'token-input', text: 'Paste an access token' }),
      input,
      h('p', { class: 'hint', id: 'token-hint', text: 'Kept in this browser tab only (session storage): closing the tab forgets it.' }),
      h('button', { type: 'submit', text: 'Sign in' }),
    ),
  );
  panel.hidden = false;
  setConnection(document.body.dataset.connection === 'expired' ? 'expired' : 'signed-out');
}

function tokenExpired(reason) {
  stopLive();
  setConnection('expired');
  $('board').classList.add('stale');
  for (const button of $('board').querySelectorAll('button, input, select')) button.disabled = true;
  notice(`Your token expired (${reason || 'token expired'}), so the live feed stopped. Sign in again to continue.`);
  showSignIn('Sign in again to resume the live view.');
}

function signOut() {
  const idToken = sessionStorage.getItem(ID_TOKEN_KEY);
  sessionStorage.removeItem(ID_TOKEN_KEY);
  state.signingOut = true;
  showSignIn('Signed out.');
  $('board').hidden = true;
  state.signingOut = false;
  if (config.oidc) window.location.assign(endSessionUrl(config.oidc, idToken, redirectUri()));
}

// ---- the board --------------------------------------------------------------------------------------

async function start() {
  $('sign-in').hidden = true;
  setConnection('connecting');
  let me;
  for (let attempt = 0; ; attempt++) {
    try {
      me = (await gql('query Me { me { sub name email orgId permissions tokenExpiresAt } }')).me;
      break;
    } catch (error) {
      if (error.kind === 'unauthenticated') return tokenExpiredOrBad(error.message);
      if (error.kind !== 'offline') return showSignIn(`The gateway refused: ${error.message}`);
      await backoff(attempt);
    }
  }
  state.me = me;
  state.can = new Set(me.permissions);
  $('who-name').textContent = `${me.name} (${me.orgId})`;
  $('who').hidden = false;
  buildBoard();
  try {
    await Promise.all([loadInstances(), state.can.has('instance:create') ? loadCatalog() : null]);
  } catch (error) {
    if (error.kind === 'unauthenticated') return tokenExpiredOrBad(error.message);
    notice(error.message);
  }
  subscribe();
}

function tokenExpiredOrBad(message) {
  if (/expired/i.test(message)) return tokenExpired(message);
  showSignIn(`The token was not accepted: ${message}`);
}

async function backoff(attempt) {
  const delay = Math.min(30_000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
  setConnection('offline', `Offline — retrying in ${Math.ceil(delay / 1000)} s`);
  await sleep(delay);
  setConnection('connecting');
}

function buildBoard() {
  const board = $('board');
  board.classList.remove('stale');
  const showActions = ACTION_PERMISSIONS.some((p) => state.can.has(p));
  const showAddress = state.can.has('instance:read:network');
  const headers = ['Name', 'Owner', 'Flavor', 'Status', showAddress ? 'Address' : null, 'Age', showActions ? 'Actions' : null, 'History'].filter(Boolean);
  state.columns = headers.length;
  state.rows.clear();
  state.instances.clear();
  state.open.clear();
  board.replaceChildren(
    h(
      'section',
      { class: 'counts', 'aria-labelledby': 'counts-title' },
      h('h2', { id: 'counts-title', class: 'visually-hidden', text: 'Instances by status' }),
      h(
        'ul',
        {},
        h('li', { class: 'count' }, h('span', { class: 'number', 'data-count': 'TOTAL', text: '0' }), h('span', { text: 'Total' })),
        ...STATUSES.map((status) =>
          h('li', { class: 'count', 'data-status': status }, h('span', { class: 'number', 'data-count': status, text: '0' }), h('span', { text: label(status) })),
        ),
      ),
    ),
    state.can.has('instance:create') ? createForm() : null,
    h(
      'div',
      { class: 'columns' },
      h(
        'section',
        { class: 'instances', 'aria-labelledby': 'instances-title' },
        h('h2', { id: 'instances-title', text: 'Instances' }),
        h('p', { class: 'hint', id: 'list-note' }),
        h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { id: 'instances' },
            h('thead', {}, h('tr', {}, ...headers.map((name) => h('th', { scope: 'col', text: name })))),
            h('tbody', { id: 'instance-rows' }),
          ),
        ),
      ),
      h(
        'section',
        { class: 'feed', 'aria-labelledby': 'feed-title' },
        h('h2', { id: 'feed-title', text: 'Latest changes' }),
        h('ol', { id: 'feed', role: 'log', 'aria-live': 'polite' }),
        h('p', { class: 'hint', id: 'feed-empty', text: 'Changes appear here as they happen.' }),
      ),
    ),
  );
  board.hidden = false;
  renderEmpty();
}

function createForm() {
  const field = (name, control, text) =>
    h('div', { class: 'field' }, h('label', { for: `create-${name}`, text }), control, h('p', { class: 'field-error', id: `create-${name}-error`, role: 'alert' }));
  const name = h('input', {
    id: 'create-name',
    name: 'name',
    required: true,
    autocomplete: 'off',
    maxlength: 63,
    'aria-describedby': 'create-name-error',
    placeholder: 'web-1',
  });
  const flavor = h('select', { id: 'create-flavor', name: 'flavor', 'aria-describedby': 'create-flavor-error' });
  const image = h('select', { id: 'create-image', name: 'image', 'aria-describedby': 'create-image-error' });
  const formError = h('p', { class: 'field-error', id: 'create-error', role: 'alert' });
  const submit = h('button', { type: 'submit', text: 'Create instance' });
  const form = h(
    'form',
    {
      id: 'create-form',
      class: 'card create',
      'aria-labelledby': 'create-title',
      onsubmit: async (event) => {
        event.preventDefault();
        for (const node of form.querySelectorAll('.field-error')) node.textContent = '';
        for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
        submit.disabled = true;
        try {
          const data = await gql(
            `mutation Create($input: CreateInstanceInput!) { createInstance(input: $input) { instance { ${instanceFields()} } userErrors { field message code } } }`,
            { input: { name: name.value.trim(), flavor: flavor.value, image: image.value } },
          );
          const { instance, userErrors } = data.createInstance;
          for (const error of userErrors) {
            const target = ['name', 'flavor', 'image'].includes(error.field) ? error.field : null;
            if (target) {
              $(`create-${target}-error`).textContent = error.message;
              $(`create-${target}`).setAttribute('aria-invalid', 'true');
            } else formError.textContent = error.message;
          }
          if (instance) {
            upsert(instance, { fresh: true });
            name.value = '';
          }
        } catch (error) {
          handleActionError(error, formError);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('h2', { id: 'create-title', text: 'New instance' }),
    h('div', { class: 'inline fields' }, field('name', name, 'Name'), field('flavor', flavor, 'Flavor'), field('image', image, 'Image'), h('div', { class: 'field submit' }, submit)),
    formError,
  );
  return form;
}

function handleActionError(error, target) {
  if (error.kind === 'unauthenticated') return tokenExpiredOrBad(error.message);
  target.textContent = error.message;
}

async function loadCatalog() {
  const { catalog } = await gql('query Catalog { catalog { flavors { name cpu memoryMib diskGib } images { name description } } }');
  const flavor = $('create-flavor');
  const image = $('create-image');
  flavor.replaceChildren(...catalog.flavors.map((f) => h('option', { value: f.name, text: `${f.name} — ${f.cpu} CPU, ${Math.round(f.memoryMib / 1024)} GiB` })));
  image.replaceChildren(...catalog.images.map((i) => h('option', { value: i.name, text: i.name })));
}

async function loadInstances() {
  const data = await gql(
    `query Instances($first: Int!) { instances(first: $first, filter: { includeDeleted: false }) { nodes { ${instanceFields()} } pageInfo { hasNextPage } } }`,
    { first: PAGE_SIZE },
  );
  const seen = new Set();
  // Oldest first, each put on top: the table ends newest first.
  for (const instance of [...data.instances.nodes].reverse()) {
    seen.add(instance.id);
    upsert(instance, { fresh: true, replace: true });
  }
  for (const id of [...state.instances.keys()]) if (!seen.has(id)) remove(id);
  $('list-note').textContent = data.instances.pageInfo.hasNextPage ? `The newest ${PAGE_SIZE} instances.` : '';
}

// ---- rows -------------------------------------------------------------------------------------------

function upsert(instance, { fresh = false, replace = false } = {}) {
  const known = state.instances.get(instance.id);
  if (known && !replace && known.version > instance.version) return; // an older event arriving late
  if (instance.status === 'DELETED') return remove(instance.id);
  state.instances.set(instance.id, instance);
  let row = state.rows.get(instance.id);
  if (!row) {
    row = h('tr', { 'data-id': instance.id });
    state.rows.set(instance.id, row);
    const body = $('instance-rows');
    if (fresh) body.prepend(row);
    else body.append(row);
  }
  fillRow(row, instance);
  if (state.open.has(instance.id)) loadTimeline(instance.id);
  renderCounts();
  renderEmpty();
}

function remove(id) {
  state.instances.delete(id);
  state.rows.get(id)?.remove();
  state.rows.delete(id);
  document.getElementById(`timeline-${id}`)?.remove();
  state.open.delete(id);
  renderCounts();
  renderEmpty();
}

function fillRow(row, instance) {
  row.dataset.name = instance.name;
  row.dataset.status = instance.status;
  row.dataset.power = instance.powerState || '';
  row.dataset.task = instance.task || '';
  const cells = [
    h('th', { scope: 'row', 'data-label': 'Name' }, h('span', { class: 'name', text: instance.name }), h('span', { class: 'sub', text: instance.image })),
    h('td', { 'data-label': 'Owner', text: instance.ownerName || instance.ownerSub }),
    h('td', { 'data-label': 'Flavor', text: instance.flavor }),
    h(
      'td',
      { 'data-label': 'Status' },
      h('span', { class: 'status', 'data-status': instance.status, text: label(instance.status) }),
      instance.statusMessage && instance.status === 'FAILED' ? h('span', { class: 'sub', text: instance.statusMessage }) : null,
      instance.status === 'ACTIVE' ? h('span', { class: 'sub power', text: powerText(instance) }) : null,
    ),
  ];
  if (state.can.has('instance:read:network')) {
    cells.push(h('td', { 'data-label': 'Address', class: 'address', text: instance.ipAddress || instance.hostname || '—' }));
  }
  cells.push(h('td', { 'data-label': 'Age', class: 'age', 'data-created': instance.createdAt, text: age(instance.createdAt) }));
  if (ACTION_PERMISSIONS.some((p) => state.can.has(p))) cells.push(actionsCell(instance));
  const open = state.open.has(instance.id);
  cells.push(
    h(
      'td',
      { 'data-label': 'History' },
      h('button', {
        type: 'button',
        class: 'secondary small',
        'aria-expanded': open ? 'true' : 'false',
        'aria-controls': `timeline-${instance.id}`,
        'aria-label': `History of ${instance.name}`,
        text: open ? 'Hide' : 'Show',
        onclick: () => toggleTimeline(instance.id),
      }),
    ),
  );
  // Keep keyboard focus where it was when a live update redraws the row.
  const focused = row.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') : null;
  row.replaceChildren(...cells);
  if (focused) row.querySelector(`[aria-label="${CSS.escape(focused)}"]`)?.focus();
}

function powerText(instance) {
  return instance.task ? TASK_TEXT[instance.task] || instance.task : POWER_TEXT[instance.powerState] || '';
}

// The server decides (INSTANCE_BUSY, INVALID_STATE, FORBIDDEN); these only hide buttons that cannot work.
function mayPower(instance) {
  if (!state.can.has('instance:power') || instance.status !== 'ACTIVE' || instance.task) return false;
  return instance.ownerSub === state.me.sub || state.can.has('instance:read:org');
}

function mayDelete(instance) {
  if (!state.can.has('instance:delete') || ['DELETING', 'DELETED'].includes(instance.status)) return false;
  return instance.ownerSub === state.me.sub || state.can.has('instance:delete:org');
}

function actionsCell(instance) {
  const error = h('p', { class: 'field-error', role: 'alert' });
  const cell = h('td', { 'data-label': 'Actions', class: 'actions' });
  if (state.can.has('instance:retry') && instance.status === 'FAILED') {
    cell.append(
      h('button', {
        type: 'button',
        class: 'small',
        'aria-label': `Retry ${instance.name}`,
        text: 'Retry',
        onclick: () => act('retryInstance', instance, error),
      }),
    );
  }
  if (mayPower(instance)) {
    const button = (text, onclick) =>
      h('button', { type: 'button', class: 'small secondary', 'aria-label': `${text} ${instance.name}`, text, onclick });
    if (instance.powerState !== 'RUNNING') cell.append(button('Start', () => act('startInstance', instance, error)));
    if (instance.powerState !== 'STOPPED') {
      cell.append(button('Stop', () => act('stopInstance', instance, error)));
      cell.append(button('Reboot', () => act('rebootInstance', instance, error)));
    }
  }
  if (mayDelete(instance)) {
    const button = h('button', {
      type: 'button',
      class: 'small danger',
      'aria-label': `Delete ${instance.name}`,
      text: 'Delete',
      onclick: () => {
        // Two steps, no modal: the first press arms the button for a few seconds.
        if (button.dataset.armed) return act('deleteInstance', instance, error);
        button.dataset.armed = 'true';
        button.textContent = 'Confirm delete';
        setTimeout(() => {
          if (!button.isConnected) return;
          delete button.dataset.armed;
          button.textContent = 'Delete';
        }, 5000);
      },
    });
    cell.append(button);
  }
  cell.append(error);
  return cell;
}

async function act(mutation, instance, errorNode) {
  errorNode.textContent = '';
  try {
    const data = await gql(
      `mutation Act($id: ID!) { ${mutation}(id: $id) { instance { ${instanceFields()} } userErrors { field message code } } }`,
      { id: instance.id },
    );
    const payload = data[mutation];
    if (payload.instance) upsert(payload.instance);
    if (payload.userErrors.length) {
      // The row may have been redrawn: show the message in the current row's error slot.
      const slot = state.rows.get(instance.id)?.querySelector('.actions .field-error') || errorNode;
      slot.textContent = payload.userErrors.map((e) => e.message).join(' ');
    }
  } catch (error) {
    handleActionError(error, errorNode);
  }
}

function renderCounts() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const instance of state.instances.values()) counts[instance.status] = (counts[instance.status] || 0) + 1;
  for (const status of STATUSES) document.querySelector(`[data-count="${status}"]`).textContent = String(counts[status]);
  document.querySelector('[data-count="TOTAL"]').textContent = String(state.instances.size);
}

function renderEmpty() {
  const body = $('instance-rows');
  const empty = body.querySelector('.empty');
  if (state.instances.size === 0 && !empty) {
    body.append(h('tr', { class: 'empty' }, h('td', { colspan: state.columns, text: 'No instances yet.' })));
  } else if (state.instances.size > 0 && empty) empty.remove();
}

setInterval(() => {
  for (const cell of document.querySelectorAll('td.age')) cell.textContent = age(cell.dataset.created);
}, 15_000);

// ---- timeline ---------------------------------------------------------------------------------------

function toggleTimeline(id) {
  if (state.open.has(id)) {
    state.open.delete(id);
    document.getElementById(`timeline-${id}`)?.remove();
  } else {
    state.open.add(id);
    loadTimeline(id);
  }
  const instance = state.instances.get(id);
  if (instance) fillRow(state.rows.get(id), instance);
  state.rows.get(id)?.querySelector('[aria-controls]')?.focus();
}

async function loadTimeline(id) {
  let holder = document.getElementById(`timeline-${id}`);
  if (!holder) {
    holder = h('tr', { id: `timeline-${id}`, class: 'timeline' }, h('td', { colspan: state.columns }));
    state.rows.get(id)?.after(holder);
  }
  const cell = holder.firstChild;
  try {
    const { instance } = await gql('query Timeline($id: ID!) { instance(id: $id) { name events(last: 50) { at fromStatus toStatus message actor } } }', { id });
    if (!instance) return cell.replaceChildren(h('p', { class: 'hint', text: 'Not visible any more.' }));
    cell.replaceChildren(
      h('h3', { class: 'visually-hidden', text: `History of ${instance.name}` }),
      h(
        'ol',
        { class: 'events' },
        ...instance.events.map((event) =>
          h(
            'li',
            {},
            h('time', { datetime: event.at, text: clock(event.at) }),
            h('span', { class: 'status', 'data-status': event.toStatus, text: label(event.toStatus) }),
            h('span', { class: 'sub', text: [event.message, `by ${event.actor}`].filter(Boolean).join(' · ') }),
          ),
        ),
      ),
    );
  } catch (error) {
    cell.replaceChildren(h('p', { class: 'field-error', text: error.message }));
  }
}

// ---- the live feed ----------------------------------------------------------------------------------

function feed(event) {
  const list = $('feed');
  $('feed-empty').hidden = true;
  list.prepend(
    h(
      'li',
      {},
      h('time', { datetime: event.at, text: clock(event.at) }),
      h('span', { class: 'name', text: event.instance.name }),
      h(
        'span',
        { class: 'change' },
        event.from && event.from !== event.to ? h('span', { class: 'status', 'data-status': event.from, text: label(event.from) }) : null,
        event.from && event.from !== event.to ? ' → ' : null,
        h('span', { class: 'status', 'data-status': event.to, text: label(event.to) }),
        // A day-2 task's start and end keep the status: say what the VM is doing instead.
        event.from === event.to && event.instance.status === 'ACTIVE' ? ` ${powerText(event.instance)}` : null,
      ),
    ),
  );
  while (list.children.length > FEED_LENGTH) list.lastElementChild.remove();
}

function subscribe() {
  const url = new URL(config.graphql, window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  let fatal = null;
  const client = graphqlWs.createClient({
    url: url.toString(),
    connectionParams: () => ({ Authorization: `Bearer ${state.token}` }),
    retryAttempts: Infinity,
    shouldRetry: (event) => !(event && (event.code === 4401 || event.code === 4403 || event.code === 4400)),
    retryWait: (retries) => backoff(retries),
    on: {
      connected: () => {
        setConnection('live');
        notice('');
        // Changes made while the socket was down are not replayed: read the list again.
        if (state.everConnected) loadInstances().catch((error) => notice(error.message));
        state.everConnected = true;
      },
      closed: (event) => {
        if (state.client !== client) return;
        if (event?.code === 4401 || event?.code === 4403) fatal = event;
        else setConnection('offline', 'Offline — reconnecting…');
      },
    },
  });
  state.client = client;
  state.unsubscribe = client.subscribe(
    {
      query: `subscription Changes { instanceStatusChanges { from to reason at version instance { ${instanceFields()} } } }`,
    },
    {
      next: ({ data, errors }) => {
        if (errors?.length) notice(errors[0].message);
        const change = data?.instanceStatusChanges;
        if (!change) return;
        upsert(change.instance);
        feed(change);
      },
      error: (error) => {
        if (state.client !== client) return;
        const event = fatal || error;
        if (event?.code === 4401) tokenExpired(event.reason);
        else if (event?.code === 4403) showSignIn(`The live feed refused the token: ${event.reason || 'forbidden'}`);
        else {
          setConnection('offline', 'Offline');
          notice(`The live feed stopped: ${event?.reason || event?.message || 'unknown error'}. Reload to retry.`);
        }
      },
      complete: () => {},
    },
  );
}

function stopLive() {
  const client = state.client;
  state.client = null;
  state.everConnected = false;
  if (client) {
    state.unsubscribe?.();
    client.dispose();
  }
}

// ---- boot -------------------------------------------------------------------------------------------

$('sign-out').addEventListener('click', signOut);

async function boot() {
  if (config.oidc && window.location.search) {
    try {
      const result = await finishSignIn(config.oidc, window.location.search);
      if (result) {
        history.replaceState(null, '', window.location.pathname);
        return signIn(result.accessToken, result.idToken);
      }
    } catch (error) {
      history.replaceState(null, '', window.location.pathname);
      return showSignIn(error.message);
    }
  }
  if (state.token) start();
  else showSignIn();
}

boot();
