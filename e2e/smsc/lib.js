'use strict';
// Pure policy of the SMSC simulator: config normalisation, bind and submit decisions, receipt
// text. No I/O here, so `node --test` can check every rule (test/lib.test.js).

const BIND_TYPES = ['transmitter', 'receiver', 'transceiver'];

// SMPP command_status values the simulator uses (SMPP 3.4 §5.1.3 / 5.0 §4.7.6).
const STATUS = {
  ESME_ROK: 0x00,
  ESME_RINVCMDID: 0x03,
  ESME_RINVBNDSTS: 0x04,
  ESME_RALYBND: 0x05,
  ESME_RSYSERR: 0x08,
  ESME_RBINDFAIL: 0x0d,
  ESME_RINVPASWD: 0x0e,
  ESME_RINVSYSID: 0x0f,
  ESME_RMSGQFUL: 0x14,
  ESME_RINVSYSTYP: 0x53,
  ESME_RTHROTTLED: 0x58,
  ESME_RX_T_APPN: 0x64,
  ESME_RX_P_APPN: 0x65,
  ESME_RX_R_APPN: 0x66,
};

// deliver_sm_resp statuses after which the receipt is offered again later: the ESME is
// temporarily unable to take it (SMPP 3.4 §5.1.3: "temporary app error", throttling, full queue,
// system error).
const TEMPORARY_RECEIPT_ERRORS = new Set([
  STATUS.ESME_RX_T_APPN,
  STATUS.ESME_RTHROTTLED,
  STATUS.ESME_RMSGQFUL,
  STATUS.ESME_RSYSERR,
]);

class ConfigError extends Error {}

function fail(where, msg) {
  throw new ConfigError(`${where}: ${msg}`);
}

function isInt(v, min) {
  return Number.isInteger(v) && v >= min;
}

function optInt(obj, key, def, where, min = 0) {
  if (obj[key] === undefined || obj[key] === null) return def;
  if (!isInt(obj[key], min)) fail(where, `${key} must be an integer >= ${min}, got ${JSON.stringify(obj[key])}`);
  return obj[key];
}

function optBool(obj, key, where) {
  if (obj[key] === undefined) return false;
  if (typeof obj[key] !== 'boolean') fail(where, `${key} must be true or false`);
  return obj[key];
}

/** "3.4" | "5.0" | "3.3" | 0x34 | 52 ... -> interface_version byte. */
function parseInterfaceVersion(v, where) {
  if (Number.isInteger(v) && v >= 0 && v <= 0xff) return v;
  if (typeof v === 'string') {
    const m = /^(\d)\.(\d)$/.exec(v.trim());
    if (m) return (Number(m[1]) << 4) | Number(m[2]);
  }
  return fail(where, `interface version must be like "3.4" or a byte, got ${JSON.stringify(v)}`);
}

function formatInterfaceVersion(b) {
  return `${b >> 4}.${b & 0x0f}`;
}

/** "close" or an ESME_R* name -> {close:true} | {status:number}. */
function parseRejectAction(v, def, where, key) {
  if (v === undefined) v = def;
  if (v === 'close') return { close: true, name: 'close' };
  if (typeof v === 'string' && STATUS[v] !== undefined && STATUS[v] !== 0) {
    return { close: false, status: STATUS[v], name: v };
  }
  return fail(where, `${key} must be "close" or one of ${Object.keys(STATUS).filter((k) => STATUS[k]).join(', ')}, got ${JSON.stringify(v)}`);
}

const BEHAVIOUR_KEYS = new Set([
  'close_after_handshake', 'bind_types', 'interface_versions', 'reject_action',
  'max_binds_per_system_id', 'max_binds_action', 'throttle_every', 'never_answer_submits',
  'drop_after_pdus', 'response_delay_ms', 'hex_message_ids', 'receipt_before_resp',
]);

/** Per-listener behaviour with defaults filled in; throws ConfigError on anything unknown. */
function normaliseBehaviour(raw, where) {
  raw = raw || {};
  for (const k of Object.keys(raw)) if (!BEHAVIOUR_KEYS.has(k)) fail(where, `unknown behaviour key "${k}"`);
  const b = {
    close_after_handshake: optBool(raw, 'close_after_handshake', where),
    bind_types: null,
    interface_versions: null,
    reject_action: parseRejectAction(raw.reject_action, 'ESME_RBINDFAIL', where, 'reject_action'),
    max_binds_per_system_id: optInt(raw, 'max_binds_per_system_id', 0, where),
    max_binds_action: parseRejectAction(raw.max_binds_action, 'ESME_RALYBND', where, 'max_binds_action'),
    throttle_every: optInt(raw, 'throttle_every', 0, where),
    never_answer_submits: optBool(raw, 'never_answer_submits', where),
    drop_after_pdus: optInt(raw, 'drop_after_pdus', 0, where),
    response_delay_ms: optInt(raw, 'response_delay_ms', 0, where),
    hex_message_ids: optBool(raw, 'hex_message_ids', where),
    receipt_before_resp: optBool(raw, 'receipt_before_resp', where),
  };
  if (raw.bind_types !== undefined) {
    if (!Array.isArray(raw.bind_types)) fail(where, 'bind_types must be a list');
    for (const t of raw.bind_types) {
      if (!BIND_TYPES.includes(t)) fail(where, `bind_types: unknown bind type ${JSON.stringify(t)} (use ${BIND_TYPES.join(', ')})`);
    }
    b.bind_types = raw.bind_types.slice();
  }
  if (raw.interface_versions !== undefined) {
    if (!Array.isArray(raw.interface_versions)) fail(where, 'interface_versions must be a list');
    b.interface_versions = raw.interface_versions.map((v) => parseInterfaceVersion(v, `${where}.interface_versions`));
  }
  return b;
}

const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'];

function normaliseTls(raw, where) {
  if (raw === undefined || raw === null || raw === false) return null;
  if (typeof raw !== 'object') fail(where, 'tls must be an object {cert, key[, client_ca]}');
  for (const k of ['cert', 'key']) {
    if (typeof raw[k] !== 'string' || !raw[k]) fail(where, `tls.${k} must be a file path`);
  }
  if (raw.client_ca !== undefined && typeof raw.client_ca !== 'string') fail(where, 'tls.client_ca must be a file path');
  // The newest TLS version the listener speaks: "TLSv1.2" plays a vendor that has no 1.3 yet.
  if (raw.max_version !== undefined && !TLS_VERSIONS.includes(raw.max_version)) {
    fail(where, `tls.max_version must be one of ${TLS_VERSIONS.join(', ')}`);
  }
  return { cert: raw.cert, key: raw.key, client_ca: raw.client_ca || null, max_version: raw.max_version || null };
}

/** Whole config with defaults; throws ConfigError naming the offending field. */
function normaliseConfig(raw) {
  if (!raw || typeof raw !== 'object') fail('config', 'must be a JSON object');
  if (!Array.isArray(raw.listeners) || raw.listeners.length === 0) fail('config', 'listeners must be a non-empty list');
  if (!Array.isArray(raw.credentials) || raw.credentials.length === 0) fail('config', 'credentials must be a non-empty list');
  const credentials = new Map();
  raw.credentials.forEach((c, i) => {
    const where = `credentials[${i}]`;
    if (!c || typeof c.system_id !== 'string' || !c.system_id) fail(where, 'system_id must be a non-empty string');
    if (typeof c.password !== 'string') fail(where, 'password must be a string');
    if (c.system_id.length > 15) fail(where, 'system_id is longer than 15 characters');
    if (c.password.length > 8) fail(where, 'password is longer than 8 characters (SMPP limit)');
    credentials.set(c.system_id, c.password);
  });
  const names = new Set();
  const listeners = raw.listeners.map((l, i) => {
    const where = `listeners[${i}]`;
    if (!l || typeof l.name !== 'string' || !l.name) fail(where, 'name must be a non-empty string');
    if (names.has(l.name)) fail(where, `duplicate listener name "${l.name}"`);
    names.add(l.name);
    const port = optInt(l, 'port', 0, `listener "${l.name}"`);
    if (port > 65535) fail(`listener "${l.name}"`, 'port must be <= 65535');
    return {
      name: l.name,
      port,
      tls: normaliseTls(l.tls, `listener "${l.name}"`),
      behaviour: normaliseBehaviour(l.behaviour, `listener "${l.name}".behaviour`),
    };
  });
  const r = raw.receipts || {};
  return {
    host: typeof raw.host === 'string' ? raw.host : '127.0.0.1',
    stats_port: optInt(raw, 'stats_port', 0, 'config'),
    dlr_delay_ms: optInt(raw, 'dlr_delay_ms', 200, 'config'),
    message_id_start: optInt(raw, 'message_id_start', null, 'config', 1),
    log_pdus: optBool(raw, 'log_pdus', 'config'),
    receipts: {
      resp_timeout_ms: optInt(r, 'resp_timeout_ms', 5000, 'receipts', 1),
      retry_delay_ms: optInt(r, 'retry_delay_ms', 500, 'receipts'),
      max_attempts: optInt(r, 'max_attempts', 5, 'receipts', 1),
      ttl_ms: optInt(r, 'ttl_ms', 120000, 'receipts', 1),
    },
    credentials,
    listeners,
  };
}

/**
 * Bind policy. Order: credentials, then the listener's bind-type / interface-version filter,
 * then the per-system_id bind limit (counted across all listeners).
 * Returns {accept:true} or {accept:false, close, status, reason}.
 */
function bindDecision(behaviour, credentials, bind, openBindsForSystemId) {
  const expected = credentials.get(bind.system_id);
  if (expected === undefined) {
    return { accept: false, close: false, status: STATUS.ESME_RINVSYSID, reason: 'unknown system_id' };
  }
  if (expected !== bind.password) {
    return { accept: false, close: false, status: STATUS.ESME_RINVPASWD, reason: 'wrong password' };
  }
  const typeOk = !behaviour.bind_types || behaviour.bind_types.includes(bind.type);
  const versionOk = !behaviour.interface_versions || behaviour.interface_versions.includes(bind.interface_version);
  if (!typeOk || !versionOk) {
    const what = !typeOk
      ? `bind type ${bind.type} not provisioned`
      : `interface version ${formatInterfaceVersion(bind.interface_version)} not provisioned`;
    return { accept: false, close: behaviour.reject_action.close, status: behaviour.reject_action.status, reason: what };
  }
  if (behaviour.max_binds_per_system_id > 0 && openBindsForSystemId >= behaviour.max_binds_per_system_id) {
    return {
      accept: false,
      close: behaviour.max_binds_action.close,
      status: behaviour.max_binds_action.status,
      reason: `bind limit ${behaviour.max_binds_per_system_id} reached`,
    };
  }
  return { accept: true };
}

/**
 * High- and low-water marks of concurrently open binds since the last reset, per system_id and
 * over all system_ids together. Fed with the open count right after each bind and each close,
 * so a dip or an overlap of a millisecond is recorded, not sampled.
 *
 * Low is the minimum observed after the first bind since the reset: a system_id that has binds
 * open at the reset starts with high = low = that number; one with none has no marks until its
 * first bind, which starts it at high = low = 1. So `low` 0 means "all its binds were closed at
 * some point", never "it had not bound yet".
 */
class BindMarks {
  /** `openNow`: Map system_id -> binds open at the reset (entries with 0 are ignored). */
  constructor(openNow = new Map()) {
    this.perSystemId = new Map();
    this.all = null;
    let total = 0;
    for (const [id, n] of openNow) {
      if (n > 0) this.perSystemId.set(id, { high: n, low: n });
      total += n;
    }
    if (total > 0) this.all = { high: total, low: total };
  }

  static bump(m, n) {
    if (!m) return n > 0 ? { high: n, low: n } : null;
    m.high = Math.max(m.high, n);
    m.low = Math.min(m.low, n);
    return m;
  }

  /** After a bind or a close of `systemId`: `open` binds of it are open now, `openAll` in all. */
  observe(systemId, open, openAll) {
    const m = BindMarks.bump(this.perSystemId.get(systemId), open);
    if (m) this.perSystemId.set(systemId, m);
    this.all = BindMarks.bump(this.all, openAll);
  }

  /** {system_id: {high, low}} for GET /stats. */
  perSystemIdJson() {
    const out = {};
    for (const [id, m] of this.perSystemId) out[id] = { high: m.high, low: m.low };
    return out;
  }

  /** {high, low} over all system_ids, or null before any bind since the reset. */
  allJson() {
    return this.all ? { high: this.all.high, low: this.all.low } : null;
  }
}

/** What to do with the n-th (1-based) submit_sm of a session: 'answer' | 'throttle' | 'ignore'. */
function submitDecision(behaviour, n) {
  if (behaviour.never_answer_submits) return 'ignore';
  if (behaviour.throttle_every > 0 && n % behaviour.throttle_every === 0) return 'throttle';
  return 'answer';
}

/** Message id as sent in submit_sm_resp (hex in hex mode) and in receipts (always decimal). */
function messageIds(n, hexInResp) {
  const decimal = String(n);
  return { resp: hexInResp ? n.toString(16).toUpperCase() : decimal, receipt: decimal };
}

function pad2(n) {
  return n < 10 ? `0${n}` : String(n);
}

/** YYMMDDhhmm in UTC, the receipt date format (SMPP 3.4 Appendix B). */
function receiptDate(d) {
  return pad2(d.getUTCFullYear() % 100) + pad2(d.getUTCMonth() + 1) + pad2(d.getUTCDate())
    + pad2(d.getUTCHours()) + pad2(d.getUTCMinutes());
}

function receiptText(id, submitDate, doneDate, text) {
  return `id:${id} sub:001 dlvrd:001 submit date:${receiptDate(submitDate)} done date:${receiptDate(doneDate)}`
    + ` stat:DELIVRD err:000 text:${String(text).slice(0, 20)}`;
}

/** Whether submit_sm asked for a receipt (registered_delivery bits 1-0 non-zero). */
function wantsReceipt(registeredDelivery) {
  return ((registeredDelivery || 0) & 0x03) !== 0;
}

function isTemporaryReceiptError(status) {
  return TEMPORARY_RECEIPT_ERRORS.has(status);
}

function statusName(status) {
  for (const k of Object.keys(STATUS)) if (STATUS[k] === status) return k;
  return `0x${status.toString(16).padStart(8, '0')}`;
}

module.exports = {
  BIND_TYPES,
  STATUS,
  ConfigError,
  parseInterfaceVersion,
  formatInterfaceVersion,
  normaliseBehaviour,
  normaliseConfig,
  bindDecision,
  BindMarks,
  submitDecision,
  messageIds,
  receiptDate,
  receiptText,
  wantsReceipt,
  isTemporaryReceiptError,
  statusName,
};
