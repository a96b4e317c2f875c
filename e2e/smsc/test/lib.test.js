'use strict';
// Unit tests of the simulator's pure policy: npm test (node --test test/lib.test.js)
const test = require('node:test');
const assert = require('node:assert/strict');
const lib = require('../lib');

const creds = new Map([['smppclient1', 'password']]);
const behaviour = (raw) => lib.normaliseBehaviour(raw, 'test');
const bind = (o) => ({ type: 'transceiver', system_id: 'smppclient1', password: 'password', interface_version: 0x34, ...o });

test('credentials: unknown system_id and wrong password get distinct statuses', () => {
  const b = behaviour({});
  assert.deepEqual(lib.bindDecision(b, creds, bind({}), 0), { accept: true });
  assert.equal(lib.bindDecision(b, creds, bind({ system_id: 'nobody' }), 0).status, lib.STATUS.ESME_RINVSYSID);
  assert.equal(lib.bindDecision(b, creds, bind({ password: 'nope' }), 0).status, lib.STATUS.ESME_RINVPASWD);
});

test('bind type and interface version filters reject or close as configured', () => {
  const reject = behaviour({ bind_types: ['transmitter'], interface_versions: ['3.4'] });
  const d = lib.bindDecision(reject, creds, bind({}), 0);
  assert.equal(d.accept, false);
  assert.equal(d.close, false);
  assert.equal(d.status, lib.STATUS.ESME_RBINDFAIL);
  assert.match(d.reason, /bind type transceiver/);
  const v = lib.bindDecision(reject, creds, bind({ type: 'transmitter', interface_version: 0x50 }), 0);
  assert.match(v.reason, /interface version 5.0/);
  assert.equal(lib.bindDecision(reject, creds, bind({ type: 'transmitter' }), 0).accept, true);
  const close = behaviour({ bind_types: ['receiver'], reject_action: 'close' });
  assert.equal(lib.bindDecision(close, creds, bind({}), 0).close, true);
  const sts = behaviour({ bind_types: ['receiver'], reject_action: 'ESME_RINVBNDSTS' });
  assert.equal(lib.bindDecision(sts, creds, bind({}), 0).status, lib.STATUS.ESME_RINVBNDSTS);
});

test('bind limit counts open binds of the system_id', () => {
  const b = behaviour({ max_binds_per_system_id: 2 });
  assert.equal(lib.bindDecision(b, creds, bind({}), 1).accept, true);
  assert.equal(lib.bindDecision(b, creds, bind({}), 2).status, lib.STATUS.ESME_RALYBND);
  const c = behaviour({ max_binds_per_system_id: 1, max_binds_action: 'close' });
  assert.equal(lib.bindDecision(c, creds, bind({}), 1).close, true);
});

test('every k-th submit is throttled; never_answer_submits wins', () => {
  const b = behaviour({ throttle_every: 3 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => lib.submitDecision(b, n)),
    ['answer', 'answer', 'throttle', 'answer', 'answer', 'throttle']);
  assert.equal(lib.submitDecision(behaviour({ never_answer_submits: true, throttle_every: 1 }), 1), 'ignore');
  assert.equal(lib.submitDecision(behaviour({}), 7), 'answer');
});

test('message ids: hex in the response only in hex mode, receipts always decimal', () => {
  assert.deepEqual(lib.messageIds(255, true), { resp: 'FF', receipt: '255' });
  assert.deepEqual(lib.messageIds(255, false), { resp: '255', receipt: '255' });
});

test('receipt text has the SMPP 3.4 Appendix B shape and 20 characters of text', () => {
  const d = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  assert.equal(lib.receiptText('42', d, d, 'abcdefghijklmnopqrstuvwxyz'),
    'id:42 sub:001 dlvrd:001 submit date:2601020304 done date:2601020304 stat:DELIVRD err:000 text:abcdefghijklmnopqrst');
});

test('temporary receipt errors are retried, permanent ones are not', () => {
  for (const s of ['ESME_RX_T_APPN', 'ESME_RTHROTTLED', 'ESME_RMSGQFUL']) assert.ok(lib.isTemporaryReceiptError(lib.STATUS[s]), s);
  assert.ok(!lib.isTemporaryReceiptError(lib.STATUS.ESME_RX_P_APPN));
  assert.ok(lib.wantsReceipt(1) && lib.wantsReceipt(2) && !lib.wantsReceipt(0) && !lib.wantsReceipt(0x10));
});

test('config errors name the field', () => {
  assert.throws(() => lib.normaliseConfig({ listeners: [{ name: 'a' }], credentials: [] }), /credentials/);
  assert.throws(() => lib.normaliseConfig({ listeners: [{ name: 'a', behaviour: { trottle_every: 2 } }],
    credentials: [{ system_id: 'x', password: 'y' }] }), /unknown behaviour key "trottle_every"/);
  assert.throws(() => lib.normaliseBehaviour({ reject_action: 'ESME_NOPE' }, 'l'), /reject_action/);
  assert.throws(() => lib.normaliseBehaviour({ interface_versions: ['three'] }, 'l'), /interface version/);
  const tls = (t) => lib.normaliseConfig({ listeners: [{ name: 'a', tls: t }], credentials: [{ system_id: 'x', password: 'y' }] });
  assert.equal(tls({ cert: 'c', key: 'k', max_version: 'TLSv1.2' }).listeners[0].tls.max_version, 'TLSv1.2');
  assert.equal(tls({ cert: 'c', key: 'k' }).listeners[0].tls.max_version, null);
  assert.throws(() => tls({ cert: 'c', key: 'k', max_version: '1.2' }), /tls.max_version must be one of TLSv1.2, TLSv1.3/);
  assert.equal(lib.parseInterfaceVersion('3.4'), 0x34);
  assert.equal(lib.parseInterfaceVersion('5.0'), 0x50);
});

test('bind marks: high and low water per system_id and over all, from the events themselves', () => {
  const m = new lib.BindMarks();
  assert.deepEqual(m.perSystemIdJson(), {});
  assert.equal(m.allJson(), null);
  // a: 1, 2, 1 (dip), 2; b: 1, 0.
  m.observe('a', 1, 1);
  m.observe('a', 2, 2);
  m.observe('b', 1, 3);
  m.observe('a', 1, 2);
  m.observe('a', 2, 3);
  m.observe('b', 0, 2);
  assert.deepEqual(m.perSystemIdJson(), { a: { high: 2, low: 1 }, b: { high: 1, low: 0 } });
  assert.deepEqual(m.allJson(), { high: 3, low: 1 });
});

test('bind marks: low counts from the first bind since the reset; binds open at the reset count', () => {
  const m = new lib.BindMarks(new Map([['a', 2], ['gone', 0]]));
  assert.deepEqual(m.perSystemIdJson(), { a: { high: 2, low: 2 } });
  assert.deepEqual(m.allJson(), { high: 2, low: 2 });
  // A close of a system_id that had no marks and now has none open records nothing.
  m.observe('c', 0, 2);
  assert.equal(m.perSystemIdJson().c, undefined);
  // A rebind that breaks before it makes: a goes 2 -> 1 -> 0 while b goes 0 -> 1 -> 2.
  m.observe('a', 1, 1);
  m.observe('b', 1, 2);
  m.observe('a', 0, 1);
  m.observe('b', 2, 2);
  assert.deepEqual(m.perSystemIdJson(), { a: { high: 2, low: 0 }, b: { high: 2, low: 1 } });
  assert.deepEqual(m.allJson(), { high: 2, low: 1 });
});
