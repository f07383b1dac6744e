// Xen Orchestra's PCI hide and unhide flows (xo.mjs says which XO code
// they follow), replayed against a real pcipassd on a demo mock host.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import semver from 'semver'
import { createClient } from 'xen-api'

import { startDaemon, within } from './support.mjs'
import { cached, connect, isPciPassthroughAvailable, setDom0Access, statuses } from './xo.mjs'

const connected = daemon =>
  connect({
    url: daemon.url,
    user: 'xo',
    password: 'xo-secret',
    // The connector waits a minute after an unexpected event error; a
    // reboot ends the session, which it handles at once.
    eventPollDelay: 500
  })

// Functions XO would offer to hide: not a bridge, not the boot disk (the
// NVMe behind 0000:00:1d.0 on the demo host) and not the console GPU
// (0000:00:02.0, refused while the host display is on).
const hideable = xapi =>
  cached(xapi, 'PCI')
    .filter(p => !p.class_id.startsWith('06') && p.pci_id !== '0000:02:00.0' && p.pci_id !== '0000:00:02.0')
    .sort((a, b) => a.pci_id.localeCompare(b.pci_id))

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

// xo_lab.mjs, as the lab runs it, on the daemon's host as user xo.
const xoLab = (daemon, pci, ...args) =>
  promisify(execFile)(process.execPath, [import.meta.dirname + '/xo_lab.mjs', ...args], {
    env: {
      ...process.env,
      PCIPASS_XO_URL: daemon.url,
      PCIPASS_XO_USER: 'xo',
      PCIPASS_XO_PASSWORD: 'xo-secret',
      PCIPASS_XO_PCI: pci
    },
    timeout: 120000
  })

test('xo_lab.mjs runs both flows on the host its environment names, over TLS', async () => {
  const daemon = await startDaemon(['--tls-self-signed'])
  try {
    assert.match(daemon.url, /^https:/)
    const { stdout } = await xoLab(daemon, '0000:03:00.1')
    assert.match(stdout, /hide: PCI.get_dom0_access_status\(0000:03:00.1\): disabled/)
    assert.match(stdout, /unhide: PCI.get_dom0_access_status\(0000:03:00.1\): enabled/)
    assert.match(stdout.trim().split('\n').at(-1), /PASS: hide, unhide$/)
    // XO's wait saw the host restart twice.
    assert.equal(stdout.match(/host back after/g)?.length, 2, stdout)
  } finally {
    daemon.stop()
  }
})

test('xo_lab.mjs fails with a clear line when the function is not there', async () => {
  const daemon = await startDaemon()
  try {
    await assert.rejects(xoLab(daemon, '0000:09:00.0', 'hide'), error => {
      assert.equal(error.code, 1)
      assert.match(error.stdout, /FAIL in setup: no PCI 0000:09:00.0 on the host \(it has 0000:00:02.0 /)
      return true
    })
  } finally {
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

test('after a hide now, xo-web reads the functions as hidden without a reboot (issue 24)', async () => {
  const daemon = await startDaemon()
  const xapi = await connected(daemon)
  try {
    const bootBefore = cached(xapi, 'host')[0].other_config.agent_start_time
    // Two functions with a driver of their own on the demo host.
    const pcis = cached(xapi, 'PCI').filter(p => ['0000:00:14.0', '0000:00:1f.6'].includes(p.pci_id))
    assert.equal(pcis.length, 2)
    for (const p of pcis) {
      assert.equal(await xapi.call('PCI.disable_dom0_access_now', p.$ref), 'disabled')
    }
    // xo-web's isPciHidden: the status is 'disabled', with no reboot.
    assert.deepEqual(await statuses(xapi, pcis), ['disabled', 'disabled'])
    assert.equal(cached(xapi, 'host')[0].other_config.agent_start_time, bootBefore)
    for (const p of pcis) {
      assert.equal(await xapi.call('PCI.enable_dom0_access_now', p.$ref), 'enabled')
    }
    assert.deepEqual(await statuses(xapi, pcis), ['enabled', 'enabled'])
  } finally {
    await xapi.disconnect()
    daemon.stop()
  }
})
