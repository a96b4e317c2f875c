#!/usr/bin/env python3
"""A customer (ESME) of the gateway's SMPP server, on Python smpplib (e2e/requirements.txt).

`make demo` runs it; it also works by hand against any gateway with --smpp-addr:

    SMPP_PASSWORD=... python3 e2e/scripts/demo-customer.py HOST PORT SYSTEM_ID [--hold]

It binds as a transceiver, submits one message asking for a delivery receipt
(registered_delivery 1), prints the message id of submit_sm_resp, waits for the receipt as
deliver_sm, answers it with deliver_sm_resp (only then does the receipt leave the account's
outbox), and unbinds. With --hold it stays bound after the receipt until a line (Enter) comes
on stdin, sending enquire_link meanwhile, so `kubectl get smppaccounts` can show the bind.

The password comes from the environment (SMPP_PASSWORD), never from the command line, so it
shows neither in `ps` nor in shell history. Exit status: 0 when the receipt said DELIVRD for
our message id, 2 when the bind was refused, 3 when the submit was, 4 for no receipt in time
or a receipt that is not DELIVRD, 1 for anything else.
"""

import argparse
import os
import select
import sys
import time

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

# Binds refused with ESME_RINVSYSID are retried for this long: right after the operator writes
# an account, the gateways may need a moment to load it (each attempt counts as a failed bind
# for --smpp-failed-binds-per-minute, so the retries are few).
BIND_RETRY_SECONDS = 3.0
ENQUIRE_LINK_EVERY = 30.0


def say(text):
    print(text, flush=True)


def status_name(code):
    for name in dir(smpplib.consts):
        if name.startswith("SMPP_ESME_R") and getattr(smpplib.consts, name) == code:
            return name[len("SMPP_"):]
    return "0x%08x" % code


def text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def bind(client, system_id, password):
    """bind_transceiver; retries ESME_RINVSYSID (the account not loaded yet) for a moment."""
    deadline = time.monotonic() + BIND_RETRY_SECONDS
    while True:
        try:
            resp = client.bind_transceiver(system_id=system_id, password=password)
            say("bind_transceiver_resp: ESME_ROK, the server's system_id %r" % text(resp.system_id))
            return
        except smpplib.exceptions.PDUError as e:
            code = e.args[1] if len(e.args) > 1 else None
            if code == smpplib.consts.SMPP_ESME_RINVSYSID and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            say("bind_transceiver refused: %s (docs/customers.md, \"Error codes\")" % status_name(code or 0))
            client.disconnect()
            sys.exit(2)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("system_id")
    p.add_argument("--source", default="ACME", help="source_addr (default ACME)")
    p.add_argument("--to", default="15551234567", help="destination_addr (default 15551234567)")
    p.add_argument("--text", default="Hello from make demo over SMPP")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the receipt")
    p.add_argument("--hold", action="store_true", help="stay bound until a line on stdin")
    a = p.parse_args()
    password = os.environ.get("SMPP_PASSWORD")
    if not password:
        sys.exit("demo-customer: SMPP_PASSWORD is not set (the account's bind password)")

    client = smpplib.client.Client(a.host, a.port, timeout=5)
    sent, receipts = [], []

    def on_submit_resp(pdu):
        sent.append(text(pdu.message_id))

    def on_deliver(pdu):
        receipts.append(pdu)
        return smpplib.consts.SMPP_ESME_ROK  # smpplib sends deliver_sm_resp with this

    def on_error(pdu):
        say("%s: %s" % (pdu.command, status_name(pdu.status)))
        sys.exit(3 if pdu.command == "submit_sm_resp" else 1)

    client.set_message_sent_handler(on_submit_resp)
    client.set_message_received_handler(on_deliver)
    client.set_error_pdu_handler(on_error)
    try:
        client.connect()
    except smpplib.exceptions.ConnectionError:
        sys.exit("demo-customer: cannot connect to %s:%d (is the gateway's --smpp-addr there?)" % (a.host, a.port))
    say("connected to %s:%d; binding as %s (password from SMPP_PASSWORD, not shown)" % (a.host, a.port, a.system_id))
    bind(client, a.system_id, password)

    client.send_message(
        source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
        source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
        source_addr=a.source,
        dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
        dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
        destination_addr=a.to,
        data_coding=1,  # IA5 (ASCII): docs/customers.md says why not 0 for ASCII text
        short_message=a.text.encode("ascii"),
        registered_delivery=1,
    )
    say("submit_sm: %s -> %s %r, registered_delivery 1" % (a.source, a.to, a.text))
    deadline = time.monotonic() + a.timeout
    while not sent and time.monotonic() < deadline:
        client.read_once()
    if not sent:
        say("no submit_sm_resp within %.0f s" % a.timeout)
        sys.exit(3)
    say("submit_sm_resp: ESME_ROK, message_id %s" % sent[0])

    while not receipts and time.monotonic() < deadline:
        client.read_once()
    if not receipts:
        say("no receipt within %.0f s (gateway log; docs/receipts.md)" % a.timeout)
        sys.exit(4)
    d = receipts[0]
    body = text(d.short_message)
    say("deliver_sm (the receipt): esm_class 0x%02x, receipted_message_id %s, message_state %s"
        % (d.esm_class, text(d.receipted_message_id), d.message_state))
    say("  short_message: %s" % body)
    say("deliver_sm_resp: ESME_ROK sent (the receipt leaves the outbox only now)")
    if text(d.receipted_message_id) != sent[0] or " stat:DELIVRD " not in body:
        say("expected a DELIVRD receipt for %s" % sent[0])
        sys.exit(4)

    if a.hold:
        say("bound, holding the session: press Enter to unbind")
        last = time.monotonic()
        while True:
            ready, _, _ = select.select([sys.stdin, client._socket], [], [], 1.0)
            if sys.stdin in ready:
                sys.stdin.readline()
                break
            if client._socket in ready:
                client.read_once()
            if time.monotonic() - last >= ENQUIRE_LINK_EVERY:
                client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))
                last = time.monotonic()
    client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))
    while True:  # past an enquire_link_resp still on its way
        resp = client.read_pdu()
        if resp.command == "unbind_resp":
            break
    say("unbind_resp: %s" % status_name(resp.status))
    client.disconnect()


if __name__ == "__main__":
    main()
