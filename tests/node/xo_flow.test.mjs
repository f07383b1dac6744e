// Xen Orchestra's PCI hide and unhide flows, replayed against a real
// pcipassd on a demo mock host through XO's own client code: the unmodified
// `xen-api` connector (its object cache, events, Async tasks, session
// renewal after the reboot), `@vates/async-each` (xo-server's 10-way
// concurrency, errors collected) and `golike-defer` (its rollback on
// failure), plus `semver` as xo-web uses it.
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
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { asyncEach } from '@vates/async-each'
import { defer } from 'golike-defer'
import semver from 'semver'
import { createClient } from 'xen-api'

import { startDaemon, within } from './support.mjs'

const NULL = 'OpaqueRef:NULL'

// The host as xo-web sees it: brand and version from software_version.
const isPciPassthroughAvailable = host =>
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
// server says the count is wrong.
async function evacuate (xapi, hostRef) {
  const params = [hostRef, NULL, 3]
  for (;;) {
    try {
      return await xapi.callAsync('host.evacuate', ...params)
    } catch (error) {
      if (error?.code !== 'MESSAGE_PARAMETER_COUNT_MISMATCH' || params.length === 1) throw error
      params.pop()
      while (params.length > 1 && params.at(-1) === NULL) params.pop()
    }
  }
}

// The whole flow for `pcis` (cached PCI objects of one host).
const setDom0Access = defer(async function ($defer, xapi, pcis, disable) {
  const method = d => `PCI.${d ? 'disable' : 'enable'}_dom0_access`
  await asyncEach(
    pcis,
    async pci => {
      await xapi.call(method(disable), pci.$ref)
      $defer.onFailure(() => xapi.call(method(!disable), pci.$ref))
    },
    { stopOnError: false }
  )
  const hostRef = pcis[0].host
  const before = +(await xapi.getField('host', hostRef, 'other_config')).agent_start_time
  await xapi.call('host.disable', hostRef)
  await evacuate(xapi, hostRef)
  await xapi.callAsync('host.reboot', hostRef)
  await waitAgentRestart(xapi, hostRef, before)
})

async function connected (daemon) {
  const xapi = createClient({
    url: daemon.url,
    auth: { user: 'xo', password: 'xo-secret' },
    allowUnauthorized: true,
    // The connector waits a minute after an unexpected event error; a
    // reboot ends the session, which it handles at once.
    eventPollDelay: 500
  })
  await within(60000, 'connect', xapi.connect())
  await within(60000, 'objectsFetched', xapi.objectsFetched)
  return xapi
}

const cached = (xapi, type) => Object.values(xapi.objects.all).filter(o => o.$type === type)

// Functions XO would offer to hide: not a bridge and not the boot disk
// (the NVMe behind 0000:00:1d.0 on the demo host).
const hideable = xapi =>
  cached(xapi, 'PCI')
    .filter(p => !p.class_id.startsWith('06') && p.pci_id !== '0000:02:00.0')
    .sort((a, b) => a.pci_id.localeCompare(b.pci_id))

const statuses = (xapi, pcis) =>
  Promise.all(pcis.map(p => xapi.call('PCI.get_dom0_access_status', p.$ref)))

test('XO hides 9 functions, reboots the host and finds them hidden; then gives them back', async () => {
  const daemon = await startDaemon()
  const xapi = await connected(daemon)
  try {
    const host = cached(xapi, 'host')[0]
    assert.ok(isPciPassthroughAvailable(host), 'xo-web shows the PCI controls')
    const pcis = hideable(xapi).slice(0, 9)
    assert.equal(pcis.length, 9)
    const bootBefore = host.other_config.agent_start_time
    // What XO's object cache sees of the host while the flow runs.
    const seen = []
    const onUpdate = objects => {
      for (const o of Object.values(objects)) {
        if (o.$type === 'host') seen.push({ enabled: o.enabled, allowed: o.allowed_operations })
      }
    }
    xapi.objects.on('update', onUpdate)

    await within(60000, 'hide flow', setDom0Access(xapi, pcis, true))
    xapi.objects.removeListener('update', onUpdate)
    assert.ok(
      seen.some(h => !h.enabled && h.allowed.includes('enable') && !h.allowed.includes('vm_start')),
      `the cache saw the host disabled: ${JSON.stringify(seen)}`
    )
    // xo-web's isPciHidden: the status is 'disabled'.
    assert.deepEqual(await statuses(xapi, pcis), Array(9).fill('disabled'))
    const after = cached(xapi, 'host')[0]
    assert.ok(+after.other_config.agent_start_time > +bootBefore)
    assert.equal(after.enabled, true)
    assert.ok(after.allowed_operations.includes('vm_start'))
    // The running kernel hides them: the mock booted the new entry.
    const cmdline = readFileSync(daemon.root + '/proc/cmdline', 'utf8')
    for (const p of pcis) assert.ok(cmdline.includes(`(${p.pci_id})`), `${p.pci_id} in ${cmdline}`)

    await within(60000, 'unhide flow', setDom0Access(xapi, pcis, false))
    assert.deepEqual(await statuses(xapi, pcis), Array(9).fill('enabled'))
  } finally {
    await xapi.disconnect()
    daemon.stop()
  }
})

test('a batch with the boot NVMe fails and XO rolls every hide back', async () => {
  const daemon = await startDaemon()
  const xapi = await connected(daemon)
  try {
    const grub = readFileSync(daemon.grubCfg)
    const nvme = cached(xapi, 'PCI').find(p => p.pci_id === '0000:02:00.0')
    const batch = [...hideable(xapi).slice(0, 4), nvme]
    await assert.rejects(setDom0Access(xapi, batch, true), error => {
      const codes = (error.errors ?? [error]).map(e => e.code)
      assert.deepEqual(codes, ['BOOT_DEVICE_PASSTHROUGH_DISALLOWED'])
      return true
    })
    assert.deepEqual(await statuses(xapi, batch), Array(5).fill('enabled'))
    assert.deepEqual(readFileSync(daemon.grubCfg), grub, 'grub.cfg is as it was')
    // The flow stopped before the reboot: the host was never disabled.
    assert.equal(cached(xapi, 'host')[0].enabled, true)
  } finally {
    await xapi.disconnect()
    daemon.stop()
  }
})

// Every field xo-server's host and pool transforms read
// (packages/xo-server/src/xapi-object-to-xo.mjs), with the shape it reads
// it as. The connector fixes a type's fields from its first record, so a
// field missing there is missing for good.
const MAP = 'map'
const SET = 'set'
const REF = 'ref'
const HOST_FIELDS = {
  address: 'string', bios_strings: MAP, capabilities: SET, certificates: SET, chipset_info: MAP,
  control_domain: REF, cpu_info: MAP, current_operations: MAP, enabled: 'boolean', hostname: 'string',
  iscsi_iqn: 'string', license_params: MAP, license_server: MAP, logging: MAP, metrics: REF,
  name_description: 'string', name_label: 'string', other_config: MAP, patches: SET, PBDs: SET,
  PCIs: SET, PGPUs: SET, PIFs: SET, power_on_mode: 'string', resident_VMs: SET, software_version: MAP,
  tags: SET, updates: SET, updates_requiring_reboot: SET
}
const POOL_FIELDS = {
  cpu_info: MAP, crash_dump_SR: REF, current_operations: MAP, default_SR: REF, ha_enabled: 'boolean',
  ha_statefiles: SET, master: REF, name_description: 'string', name_label: 'string', other_config: MAP,
  restrictions: MAP, suspend_image_SR: REF, tags: SET
}

function assertShape (object, fields) {
  for (const [field, shape] of Object.entries(fields)) {
    const value = object[field]
    const where = `${object.$type}.${field}`
    if (shape === MAP) assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), where)
    else if (shape === SET) assert.ok(Array.isArray(value), where)
    else if (shape === REF) assert.match(value, /^OpaqueRef:/, where)
    else assert.equal(typeof value, shape, where)
  }
}

for (const transport of ['json-rpc', 'xml-rpc']) {
  test(`the host and pool survive xo-server's transforms over ${transport}`, async () => {
    const daemon = await startDaemon()
    const xapi = createClient({ url: daemon.url, auth: { user: 'xo', password: 'xo-secret' }, allowUnauthorized: true, transport })
    try {
      await within(60000, 'connect', xapi.connect())
      await within(60000, 'objectsFetched', xapi.objectsFetched)
      const host = cached(xapi, 'host')[0]
      const pool = xapi.pool
      assertShape(host, HOST_FIELDS)
      assertShape(pool, POOL_FIELDS)
      // What the transforms compute from them.
      assert.ok(host.capabilities.some(c => c.startsWith('hvm')), 'HVM capable')
      assert.ok(semver.valid(host.software_version.platform_version), 'platform_version is a version')
      for (const key of Object.keys(host.software_version)) {
        assert.notEqual(key.split(':').length, 2, `${key} would be taken for a supplemental pack`)
      }
      const metrics = host.$metrics
      assert.ok(metrics !== undefined, 'host_metrics is cached')
      assert.ok(+metrics.memory_total > 0 && metrics.live === true)
      assert.ok(Array.isArray(pool.$ha_statefiles))
      assert.equal(pool.$master, host)
      assert.ok(+host.other_config.agent_start_time > 0)
      for (const pci of cached(xapi, 'PCI')) {
        assert.equal(pci.$host, host)
        assert.ok(pci.class_name && pci.device_name && pci.pci_id)
      }
      for (const pgpu of cached(xapi, 'PGPU')) {
        assert.ok(['enabled', 'disable_on_reboot', 'disabled', 'enable_on_reboot'].includes(pgpu.dom0_access))
        assert.ok(pgpu.$PCI !== undefined)
      }
    } finally {
      await xapi.disconnect()
      daemon.stop()
    }
  })
}
