// Xen Orchestra's PCI hide and unhide flows through XO's own client code:
// the unmodified `xen-api` connector (its object cache, events, Async
// tasks, session renewal after the reboot), `@vates/async-each`
// (xo-server's 10-way concurrency, errors collected) and `golike-defer`
// (its rollback on failure), plus `semver` as xo-web uses it. Shared by
// xo_flow.test.mjs (a mock host) and xo_lab.mjs (a real host).
//
// The sequence is xo-server's `pci.disableDom0Access` with forceReboot
// (packages/xo-server/src/api/pci.mjs, `rebootHost` and `clearHost` in
// packages/xo-server/src/xapi/index.mjs) and the wait of
// @xen-orchestra/xapi's `waitAgentRestart` (host.mjs): every
// PCI.(disable|enable)_dom0_access, then host.disable,
// Async.host.evacuate(host, OpaqueRef:NULL, 3) (fewer parameters only on
// MESSAGE_PARAMETER_COUNT_MISMATCH), Async.host.reboot, then wait until
// other_config.agent_start_time has grown and the host is enabled. A failed
// step undoes every PCI call that succeeded. @xen-orchestra/xapi itself does
// not install from the registry this project builds against (it needs
// @vates/task and @vates/parse-duration, which are not published there), so
// its Xapi class is not used; the connector it extends is.
import { asyncEach } from '@vates/async-each'
import { defer } from 'golike-defer'
import semver from 'semver'
import { createClient } from 'xen-api'

import { within } from './support.mjs'

const NULL = 'OpaqueRef:NULL'

// The host as xo-web sees it: brand and version from software_version.
export const isPciPassthroughAvailable = host =>
  host.software_version.product_brand === 'XCP-ng' &&
  semver.satisfies(host.software_version.product_version, '>=8.3.0')

// @xen-orchestra/xapi's waitAgentRestart: `watchObject(hostRef, cb)`
// calls `cb` on each later add or update of the host in the object cache
// and never looks at the object as it is when the watch starts. A new
// agent_start_time that reached the cache before `host.reboot`'s task
// settled is therefore never seen: the host must restart after the task.
function waitAgentRestart (xapi, hostRef, prevAgentStartTime) {
  return new Promise(resolve => {
    const onAddOrUpdate = objects => {
      for (const object of Object.values(objects)) {
        if (object.$ref === hostRef && +object.other_config.agent_start_time > prevAgentStartTime && object.enabled) {
          xapi.objects.removeListener('add', onAddOrUpdate)
          xapi.objects.removeListener('update', onAddOrUpdate)
          resolve(object)
        }
      }
    }
    xapi.objects.on('add', onAddOrUpdate)
    xapi.objects.on('update', onAddOrUpdate)
  })
}

// xo-server's evacuation: three parameters first, fewer only when the
// server says the count is wrong. Returns the parameters that worked.
async function evacuate (xapi, hostRef) {
  const params = [hostRef, NULL, 3]
  for (;;) {
    try {
      await xapi.callAsync('host.evacuate', ...params)
      return params
    } catch (error) {
      if (error?.code !== 'MESSAGE_PARAMETER_COUNT_MISMATCH' || params.length === 1) throw error
      params.pop()
      while (params.length > 1 && params.at(-1) === NULL) params.pop()
    }
  }
}

const seconds = since => `${Math.round((Date.now() - since) / 1000)} s`

// The whole flow for `pcis` (cached PCI objects of one host). `log` gets a
// line per step; the wait for the new agent_start_time fails after
// `restartTimeoutMs` (XO itself waits without a bound).
export const setDom0Access = defer(async function ($defer, xapi, pcis, disable, { log = () => {}, restartTimeoutMs = 60000 } = {}) {
  const method = d => `PCI.${d ? 'disable' : 'enable'}_dom0_access`
  await asyncEach(
    pcis,
    async pci => {
      const status = await xapi.call(method(disable), pci.$ref)
      log(`${method(disable)}(${pci.pci_id}): ${status}`)
      $defer.onFailure(() => xapi.call(method(!disable), pci.$ref))
    },
    { stopOnError: false }
  )
  const hostRef = pcis[0].host
  const { agent_start_time: prev } = await xapi.getField('host', hostRef, 'other_config')
  const before = +prev
  await xapi.call('host.disable', hostRef)
  log('host.disable: done')
  const params = await evacuate(xapi, hostRef)
  log(`Async.host.evacuate with ${params.length} parameter(s): done`)
  await xapi.callAsync('host.reboot', hostRef)
  const rebooted = Date.now()
  log(`Async.host.reboot: task succeeded; waiting (at most ${restartTimeoutMs / 1000} s) for agent_start_time > ${prev} with the host enabled`)
  // What the connector does while the host is away: a new session once
  // the toolstack answers again.
  const onSession = () => log(`connector: logged in again after ${seconds(rebooted)}`)
  xapi.on('sessionId', onSession)
  try {
    const host = await within(restartTimeoutMs, 'agent_start_time to move', waitAgentRestart(xapi, hostRef, before))
    log(`host back after ${seconds(rebooted)}: agent_start_time ${host.other_config.agent_start_time}, enabled`)
    return host
  } finally {
    xapi.removeListener('sessionId', onSession)
  }
})

// XO's connector, logged in and with its object cache filled.
// `eventPollDelay` is how long it waits after an unexpected event error
// (the connector's default is a minute).
export async function connect ({ url, user, password, eventPollDelay, timeoutMs = 60000 }) {
  const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true, eventPollDelay })
  try {
    await within(timeoutMs, 'connect', xapi.connect())
    await within(timeoutMs, 'objectsFetched', xapi.objectsFetched)
  } catch (error) {
    await xapi.disconnect()
    throw error
  }
  return xapi
}

export const cached = (xapi, type) => Object.values(xapi.objects.all).filter(o => o.$type === type)

export const statuses = (xapi, pcis) =>
  Promise.all(pcis.map(p => xapi.call('PCI.get_dom0_access_status', p.$ref)))
