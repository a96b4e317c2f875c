#!/usr/bin/env node
'use strict';
// SMSC simulator for the gateway's end-to-end tests: plain and TLS SMPP listeners on node-smpp,
// delivery receipts with retries, per-listener misbehaviour modes, JSON stats over HTTP.
// Usage: node smsc.js --config <file.json> [--ready-file <file.json>] [--parent-pid <pid>].
// See README.md.

const fs = require('fs');
const http = require('http');
const path = require('path');
const smpp = require('smpp');
const lib = require('./lib');

const { STATUS } = lib;

function log(msg) {
  process.stderr.write(`${new Date().toISOString()} smsc: ${msg}\n`);
}

function die(msg, code = 1) {
  process.stderr.write(`smsc: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const args = { config: null, readyFile: null, parentPid: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config') args.config = argv[++i];
    else if (a === '--ready-file') args.readyFile = argv[++i];
    else if (a === '--parent-pid') args.parentPid = Number(argv[++i]);
    else die(`unknown argument ${JSON.stringify(a)} (usage: smsc.js --config <file.json> [--ready-file <file>])`, 2);
  }
  if (!args.config) die('missing --config <file.json>', 2);
  return args;
}

function zeroCounters() {
  return {
    connections_total: 0,
    binds_total: 0,
    bind_rejects: 0,
    submits: 0,
    submits_answered: 0,
    submits_throttled: 0,
    submits_unanswered: 0,
    enquire_links: 0,
    receipts_sent: 0,
    receipts_acked: 0,
    receipts_retried: 0,
    receipts_failed: 0,
    receipts_expired: 0,
    errors: 0,
  };
}

class Simulator {
  constructor(cfg) {
    this.cfg = cfg;
    this.counters = zeroCounters();
    this.conns = new Set(); // open connection records
    this.nextConnId = 1;
    // Seeded from the clock so ids stay unique across a kill/restart of the simulator.
    this.nextMessageId = cfg.message_id_start || Date.now() * 100;
    this.pendingReceipts = 0;
    this.marks = new lib.BindMarks();
    this.servers = [];
    this.ports = {};
  }

  // --- bookkeeping -------------------------------------------------------------------------

  openBinds(systemId) {
    let n = 0;
    for (const c of this.conns) if (c.bound && c.bound.system_id === systemId) n++;
    return n;
  }

  /** Map system_id -> binds open now. */
  openBindsBySystemId() {
    const m = new Map();
    for (const c of this.conns) if (c.bound) m.set(c.bound.system_id, (m.get(c.bound.system_id) || 0) + 1);
    return m;
  }

  /** Updates the bind marks right after a bind of `systemId` opened or closed. */
  noteBindChange(systemId) {
    let all = 0;
    for (const c of this.conns) if (c.bound) all++;
    this.marks.observe(systemId, this.openBinds(systemId), all);
  }

  /** `conn` is no longer bound (unbind answered, or closed while bound). */
  unbindConn(conn) {
    if (!conn.bound) return;
    const systemId = conn.bound.system_id;
    conn.bound = null;
    this.noteBindChange(systemId);
  }

  stats() {
    const binds = {};
    for (const c of this.conns) {
      if (!c.bound) continue;
      const e = binds[c.bound.system_id] || (binds[c.bound.system_id] = { transmitter: 0, receiver: 0, transceiver: 0, total: 0 });
      e[c.bound.type]++;
      e.total++;
    }
    const listeners = {};
    for (const l of this.cfg.listeners) {
      listeners[l.name] = { port: this.ports[l.name], tls: !!l.tls, connections_open: 0 };
    }
    for (const c of this.conns) listeners[c.listener.name].connections_open++;
    return {
      binds,
      bind_marks: this.marks.perSystemIdJson(),
      bind_marks_all: this.marks.allJson(),
      connections_open: this.conns.size,
      receipts_pending: this.pendingReceipts,
      ...this.counters,
      listeners,
    };
  }

  // --- connections -------------------------------------------------------------------------

  onSession(listener, session) {
    const b = listener.behaviour;
    const conn = {
      id: this.nextConnId++,
      listener,
      session,
      bound: null,
      pdus: 0,
      submits: 0,
      closed: false,
      inflightReceipts: new Set(),
      peer: `${session.socket.remoteAddress}:${session.socket.remotePort}`,
    };
    this.counters.connections_total++;
    this.conns.add(conn);
    session.on('error', (e) => {
      // Parse errors leave node-smpp's reader stuck; drop the connection.
      this.counters.errors++;
      log(`conn ${conn.id} (${listener.name}) error: ${e.message}`);
      session.destroy();
    });
    session.on('close', () => this.onClose(conn));
    // The negotiated TLS version, so a test can tell which one a client got.
    const proto = typeof session.socket.getProtocol === 'function' ? ` ${session.socket.getProtocol()}` : '';
    log(`conn ${conn.id} (${listener.name}) open from ${conn.peer}${proto}`);
    if (b.close_after_handshake) {
      log(`conn ${conn.id} (${listener.name}) mode close_after_handshake: closing without reading`);
      session.pause();
      this.hangUp(conn);
      return;
    }
    session.on('pdu', (pdu) => this.onPdu(conn, pdu));
  }

  onClose(conn) {
    if (conn.closed) return;
    conn.closed = true;
    this.conns.delete(conn);
    const who = conn.bound ? ` ${conn.bound.type} ${conn.bound.system_id}` : '';
    this.unbindConn(conn);
    log(`conn ${conn.id} (${conn.listener.name})${who} closed`);
    // Receipts waiting for a deliver_sm_resp on this connection go out again elsewhere.
    for (const h of conn.inflightReceipts) h.settle('connection closed');
  }

  /** Half-closes (FIN) after pending writes, so already-sent responses still reach the peer. */
  hangUp(conn) {
    conn.session.pause();
    conn.session.socket.end();
    setTimeout(() => conn.session.socket.destroy(), 2000).unref();
  }

  respond(conn, pdu, resp, after) {
    const send = () => {
      if (conn.closed) return;
      conn.session.send(resp);
      if (after) after();
    };
    const delay = conn.listener.behaviour.response_delay_ms;
    if (delay > 0) setTimeout(send, delay);
    else send();
  }

  onPdu(conn, pdu) {
    const b = conn.listener.behaviour;
    if (conn.closed) return;
    conn.pdus++;
    if (this.cfg.log_pdus) log(`conn ${conn.id} <- ${pdu.command} seq=${pdu.sequence_number}`);
    if (b.drop_after_pdus > 0 && conn.pdus >= b.drop_after_pdus) {
      log(`conn ${conn.id} (${conn.listener.name}) mode drop_after_pdus=${b.drop_after_pdus}: dropping on ${pdu.command}`);
      this.hangUp(conn);
      return;
    }
    if (pdu.isResponse()) return; // deliver_sm_resp etc.: handled by node-smpp callbacks
    switch (pdu.command) {
      case 'bind_transmitter':
      case 'bind_receiver':
      case 'bind_transceiver':
        return this.onBind(conn, pdu);
      case 'enquire_link':
        this.counters.enquire_links++;
        return this.respond(conn, pdu, pdu.response());
      case 'unbind':
        return this.respond(conn, pdu, pdu.response(), () => {
          log(`conn ${conn.id} unbind${conn.bound ? ` ${conn.bound.type} ${conn.bound.system_id}` : ''}`);
          this.unbindConn(conn);
          this.hangUp(conn);
        });
      case 'submit_sm':
        return this.onSubmit(conn, pdu);
      default:
        this.counters.errors++;
        if (pdu.command === 'unknown') return this.respond(conn, pdu, pdu.response());
        return this.respond(conn, pdu, pdu.response({ command_status: STATUS.ESME_RINVCMDID }));
    }
  }

  onBind(conn, pdu) {
    const bind = {
      type: pdu.command.slice('bind_'.length),
      system_id: pdu.system_id,
      password: pdu.password,
      interface_version: pdu.interface_version,
    };
    const desc = `${bind.type} system_id=${JSON.stringify(bind.system_id)} system_type=${JSON.stringify(pdu.system_type)}`
      + ` version=${lib.formatInterfaceVersion(bind.interface_version)}`;
    if (conn.bound) {
      this.counters.bind_rejects++;
      log(`conn ${conn.id} bind ${desc} rejected: already bound (ESME_RALYBND)`);
      return this.respond(conn, pdu, pdu.response({ command_status: STATUS.ESME_RALYBND }));
    }
    const d = lib.bindDecision(conn.listener.behaviour, this.cfg.credentials, bind, this.openBinds(bind.system_id));
    if (!d.accept) {
      this.counters.bind_rejects++;
      if (d.close) {
        log(`conn ${conn.id} bind ${desc} refused (${d.reason}): closing the connection, no bind_resp`);
        return this.hangUp(conn);
      }
      log(`conn ${conn.id} bind ${desc} rejected (${d.reason}): ${lib.statusName(d.status)}`);
      return this.respond(conn, pdu, pdu.response({ command_status: d.status }));
    }
    // Counted as bound from now on, so a racing bind on another connection sees the limit.
    conn.bound = { type: bind.type, system_id: bind.system_id, interface_version: bind.interface_version };
    this.counters.binds_total++;
    this.noteBindChange(bind.system_id);
    log(`conn ${conn.id} bind ${desc} accepted (${this.openBinds(bind.system_id)} open for this system_id)`);
    const opts = { system_id: 'SMSCSIM' };
    if (bind.interface_version >= 0x34) opts.sc_interface_version = 0x34;
    this.respond(conn, pdu, pdu.response(opts));
  }

  onSubmit(conn, pdu) {
    if (!conn.bound || conn.bound.type === 'receiver') {
      this.counters.errors++;
      return this.respond(conn, pdu, pdu.response({ command_status: STATUS.ESME_RINVBNDSTS }));
    }
    this.counters.submits++;
    conn.submits++;
    const action = lib.submitDecision(conn.listener.behaviour, conn.submits);
    if (action === 'ignore') {
      this.counters.submits_unanswered++;
      return;
    }
    if (action === 'throttle') {
      this.counters.submits_throttled++;
      return this.respond(conn, pdu, pdu.response({ command_status: STATUS.ESME_RTHROTTLED }));
    }
    const n = this.nextMessageId++;
    const ids = lib.messageIds(n, conn.listener.behaviour.hex_message_ids);
    const receipt = lib.wantsReceipt(pdu.registered_delivery) ? this.newReceipt(conn, pdu, ids.receipt) : null;
    if (receipt && conn.listener.behaviour.receipt_before_resp) this.sendReceipt(receipt);
    else if (receipt) setTimeout(() => this.sendReceipt(receipt), this.cfg.dlr_delay_ms);
    this.counters.submits_answered++;
    this.respond(conn, pdu, pdu.response({ message_id: ids.resp }));
  }

  // --- receipts ----------------------------------------------------------------------------

  newReceipt(conn, pdu, id) {
    const sm = pdu.short_message;
    let text = '';
    const msg = sm && sm.message !== undefined ? sm.message : sm;
    if (typeof msg === 'string') text = msg;
    else if (Buffer.isBuffer(msg)) text = msg.toString('latin1');
    else if (pdu.message_payload && pdu.message_payload.message !== undefined) text = String(pdu.message_payload.message);
    this.pendingReceipts++;
    return {
      id,
      system_id: conn.bound.system_id,
      preferred: conn,
      source_addr: pdu.destination_addr || '',
      destination_addr: pdu.source_addr || '',
      submitDate: new Date(),
      text,
      attempts: 0,
      expiresAt: Date.now() + this.cfg.receipts.ttl_ms,
    };
  }

  /** A bound receiver/transceiver of the receipt's system_id, preferring the submitting one. */
  receiverFor(r) {
    const ok = (c) => !c.closed && c.bound && c.bound.system_id === r.system_id && c.bound.type !== 'transmitter';
    if (ok(r.preferred)) return r.preferred;
    for (const c of this.conns) if (ok(c)) return c;
    return null;
  }

  sendReceipt(r) {
    if (Date.now() > r.expiresAt) {
      this.counters.receipts_expired++;
      this.pendingReceipts--;
      log(`receipt ${r.id} for ${r.system_id} expired after ${r.attempts} attempts`);
      return;
    }
    const conn = this.receiverFor(r);
    if (!conn) {
      // No receiver bound right now: wait for one (does not use up an attempt).
      setTimeout(() => this.sendReceipt(r), Math.max(this.cfg.receipts.retry_delay_ms, 50));
      return;
    }
    r.attempts++;
    this.counters.receipts_sent++;
    const pdu = new smpp.PDU('deliver_sm', {
      source_addr: r.source_addr,
      destination_addr: r.destination_addr,
      esm_class: 0x04,
      data_coding: 0,
      short_message: Buffer.from(lib.receiptText(r.id, r.submitDate, new Date(), r.text), 'latin1'),
      receipted_message_id: r.id,
      message_state: 2, // DELIVERED
    });
    const handle = {
      settled: false,
      settle: (outcome, status) => {
        if (handle.settled) return;
        handle.settled = true;
        clearTimeout(timer);
        conn.inflightReceipts.delete(handle);
        delete conn.session._callbacks[pdu.sequence_number];
        this.onReceiptOutcome(r, outcome, status);
      },
    };
    const timer = setTimeout(() => handle.settle('no deliver_sm_resp'), this.cfg.receipts.resp_timeout_ms);
    conn.inflightReceipts.add(handle);
    const sent = conn.session.send(pdu, (resp) => handle.settle('resp', resp.command_status));
    if (!sent) handle.settle('connection not writable');
  }

  onReceiptOutcome(r, outcome, status) {
    if (outcome === 'resp' && status === STATUS.ESME_ROK) {
      this.counters.receipts_acked++;
      this.pendingReceipts--;
      return;
    }
    const why = outcome === 'resp' ? lib.statusName(status) : outcome;
    if (outcome === 'resp' && !lib.isTemporaryReceiptError(status)) {
      this.counters.receipts_failed++;
      this.pendingReceipts--;
      log(`receipt ${r.id} for ${r.system_id} refused with permanent error ${why}: dropped`);
      return;
    }
    if (r.attempts >= this.cfg.receipts.max_attempts) {
      this.counters.receipts_failed++;
      this.pendingReceipts--;
      log(`receipt ${r.id} for ${r.system_id} gave up after ${r.attempts} attempts (last: ${why})`);
      return;
    }
    this.counters.receipts_retried++;
    log(`receipt ${r.id} for ${r.system_id} attempt ${r.attempts} failed (${why}): re-sending in ${this.cfg.receipts.retry_delay_ms} ms`);
    setTimeout(() => this.sendReceipt(r), this.cfg.receipts.retry_delay_ms);
  }

  // --- servers -----------------------------------------------------------------------------

  listen(listener) {
    return new Promise((resolve, reject) => {
      const opts = {};
      if (listener.tls) {
        try {
          opts.cert = fs.readFileSync(listener.tls.cert);
          opts.key = fs.readFileSync(listener.tls.key);
          if (listener.tls.client_ca) {
            opts.ca = fs.readFileSync(listener.tls.client_ca);
            opts.requestCert = true;
            opts.rejectUnauthorized = true;
          }
          if (listener.tls.max_version) opts.maxVersion = listener.tls.max_version;
        } catch (e) {
          reject(new Error(`listener "${listener.name}": cannot read TLS files: ${e.message}`));
          return;
        }
      }
      const server = smpp.createServer(opts, (session) => this.onSession(listener, session));
      server.on('tlsClientError', (e) => {
        this.counters.errors++;
        log(`listener ${listener.name}: TLS handshake failed: ${e.message}`);
      });
      server.once('error', (e) => {
        const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.message;
        reject(new Error(`listener "${listener.name}" cannot listen on ${this.cfg.host}:${listener.port}: ${why}`));
      });
      server.listen(listener.port, this.cfg.host, () => {
        // Errors after start-up (e.g. out of file descriptors) are logged, not fatal.
        server.on('error', (e) => {
          this.counters.errors++;
          log(`listener ${listener.name}: ${e.message}`);
        });
        this.ports[listener.name] = server.address().port;
        this.servers.push(server);
        log(`listener ${listener.name} (${listener.tls ? 'tls' : 'plain'}) on ${this.cfg.host}:${this.ports[listener.name]}`);
        resolve();
      });
    });
  }

  listenStats() {
    return new Promise((resolve, reject) => {
      const server = http.createServer((req, res) => this.onHttp(req, res));
      server.once('error', (e) => {
        const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.message;
        reject(new Error(`stats server cannot listen on ${this.cfg.host}:${this.cfg.stats_port}: ${why}`));
      });
      server.listen(this.cfg.stats_port, this.cfg.host, () => {
        this.statsPort = server.address().port;
        this.servers.push(server);
        log(`stats on http://${this.cfg.host}:${this.statsPort}/stats`);
        resolve();
      });
    });
  }

  onHttp(req, res) {
    const url = req.url.split('?')[0];
    const reply = (code, body) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && url === '/stats') return reply(200, this.stats());
    if (req.method === 'GET' && url === '/health') return reply(200, { ok: true });
    if (req.method === 'POST' && url === '/reset') {
      this.counters = zeroCounters();
      this.marks = new lib.BindMarks(this.openBindsBySystemId());
      return reply(200, this.stats());
    }
    return reply(404, { error: `no route ${req.method} ${url} (try GET /stats, POST /reset)` });
  }

  shutdown() {
    for (const s of this.servers) s.close();
    for (const c of this.conns) c.session.socket.destroy();
  }
}

function writeReadyFile(file, sim) {
  const listeners = {};
  for (const l of sim.cfg.listeners) listeners[l.name] = { port: sim.ports[l.name], tls: !!l.tls };
  const body = JSON.stringify({ pid: process.pid, host: sim.cfg.host, stats_port: sim.statsPort, listeners }, null, 2);
  // Write then rename, so a poller never reads half a file.
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, body);
  fs.renameSync(tmp, file);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let cfg;
  try {
    cfg = lib.normaliseConfig(JSON.parse(fs.readFileSync(args.config, 'utf8')));
  } catch (e) {
    die(`config ${args.config}: ${e.message}`, 2);
  }
  // TLS and cert paths in the config are relative to the config file.
  for (const l of cfg.listeners) {
    if (!l.tls) continue;
    for (const k of ['cert', 'key', 'client_ca']) {
      if (l.tls[k]) l.tls[k] = path.resolve(path.dirname(args.config), l.tls[k]);
    }
  }
  const sim = new Simulator(cfg);
  const stop = (sig) => {
    log(`${sig}: shutting down`);
    sim.shutdown();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (args.parentPid) {
    // Test harnesses pass their pid: a test process killed before it could clean up must not
    // leave a simulator behind.
    setInterval(() => {
      try {
        process.kill(args.parentPid, 0);
      } catch (_) {
        stop(`parent ${args.parentPid} gone`);
      }
    }, 500).unref();
  }
  try {
    for (const l of cfg.listeners) await sim.listen(l);
    await sim.listenStats();
  } catch (e) {
    sim.shutdown();
    die(e.message);
  }
  if (args.readyFile) writeReadyFile(args.readyFile, sim);
  log(`ready (pid ${process.pid})`);
}

main();
