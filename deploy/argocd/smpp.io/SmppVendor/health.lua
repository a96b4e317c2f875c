-- Argo CD health check for smpp.io/SmppVendor (argocd-cm key:
-- resource.customizations.health.smpp.io_SmppVendor). See docs/argocd.md.
--
-- Argo CD runs custom checks in a sandbox with only the base, table and a "safe" os library
-- (os.time, os.date) of Lua 5.1 (gopher-lua): no string or math library here, and nothing
-- newer than Lua 5.1. e2e/tests/argocd_health.rs runs this file under that sandbox.

-- A bind failure counts as Degraded once the vendor has been not Ready for this long;
-- before that the gateways are still retrying (every few seconds) and it is Progressing.
local BIND_FAILED_GRACE_SECONDS = 300

-- Reasons of Ready=False that need a person: Degraded at once.
local NEEDS_A_PERSON = {
  Conflict = true,
  SecretNotFound = true,
  SecretKeyMissing = true,
  PasswordTooLong = true,
  InvalidSecret = true,
  InvalidCACertificate = true,
  InvalidClientCertificate = true,
}

local function condition(o, type_)
  if o.status == nil or o.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(o.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  return (c.reason or "") .. ": " .. (c.message or "")
end

-- Whether the condition's lastTransitionTime is at least `seconds` in the past. RFC 3339
-- UTC timestamps of one layout sort as strings, so the cut-off is formatted with os.date and
-- compared; no parsing (and no string library) needed.
local function older_than(c, seconds)
  if c.lastTransitionTime == nil then
    return false
  end
  local cutoff = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - seconds)
  return c.lastTransitionTime <= cutoff
end

local hs = {}

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted: the operator deletes or releases the vendor's row (deletionPolicy), then removes its finalizer"
  return hs
end

local generation = tonumber(obj.metadata.generation)
local observed = nil
if obj.status ~= nil then
  observed = tonumber(obj.status.observedGeneration)
end
if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = "waiting for the operator to observe generation " .. generation
  else
    hs.message = "waiting for the operator to observe generation " .. generation .. " (observed " .. observed .. ")"
  end
  return hs
end

local ready = condition(obj, "Ready")

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  if ready ~= nil then
    hs.message = describe(ready)
  else
    hs.message = "spec.suspend is true: the row is kept and every gateway unbinds"
  end
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report the Ready condition"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

if ready.status == "False" and NEEDS_A_PERSON[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if ready.status == "False" and ready.reason == "BindFailed" then
  if older_than(ready, BIND_FAILED_GRACE_SECONDS) then
    hs.status = "Degraded"
    hs.message = "BindFailed, not Ready since " .. ready.lastTransitionTime .. ": " .. (ready.message or "")
  else
    hs.status = "Progressing"
    hs.message = "BindFailed (gateways retrying; Degraded after 5 minutes): " .. (ready.message or "")
  end
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
