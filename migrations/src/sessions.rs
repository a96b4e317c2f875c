//! Bind-slot claims, heartbeats and gateway_pods: the gateway side of vendor_sessions (issue 4).
