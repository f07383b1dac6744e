// Xen Orchestra's unmodified `xen-api` connector against a real pcipassd on
// a demo mock host, over each transport it offers.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from 'xen-api'

import { startDaemon, within } from './support.mjs'

// A second client: plain JSON-RPC with fetch.
async function rpc (url, method, params) {
  const res = await fetch(url + '/jsonrpc', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params })
  })
  const body = await res.json()
  if (body.error) throw new Error(`${body.error.message} ${JSON.stringify(body.error.data)}`)
  return body.result
}

async function waitFor (what, predicate, ms = 60000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (predicate()) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timeout waiting for ${what}`)
}

for (const transport of ['auto', 'json-rpc', 'xml-rpc']) {
  test(`xen-api connector over ${transport}`, async () => {
    const daemon = await startDaemon()
    const xapi = createClient({ url: daemon.url, auth: { user: 'xo', password: 'xo-secret' }, allowUnauthorized: true, transport })
    try {
      await within(60000, 'connect', xapi.connect())
      assert.equal(xapi.status, 'connected')
      await within(60000, 'objectsFetched', xapi.objectsFetched)
      const all = Object.values(xapi.objects.all)
      const pcis = all.filter(o => o.$type === 'PCI')
      const pgpus = all.filter(o => o.$type === 'PGPU')
      const session = await rpc(daemon.url, 'session.login_with_password', ['xo', 'xo-secret'])
      const records = await rpc(daemon.url, 'PCI.get_all_records', [session])
      assert.equal(pcis.length, Object.keys(records).length, 'every PCI is cached')
      assert.equal(pgpus.length, Object.keys(await rpc(daemon.url, 'PGPU.get_all_records', [session])).length)
      const pgpu = pgpus.find(p => !p.is_system_display_device)
      assert.equal(pgpu.dom0_access, 'enabled')

      // Another client disables dom0 access: the cached PGPU follows.
      assert.equal(await rpc(daemon.url, 'PCI.disable_dom0_access', [session, pgpu.PCI]), 'disable_on_reboot')
      await waitFor('PGPU update event', () => xapi.getObject(pgpu.$ref).dom0_access === 'disable_on_reboot')

      // A hand edit of the boot configuration shows up too.
      daemon.xenCmdline('--delete-dom0', 'xen-pciback.hide')
      await waitFor('hand edit event', () => xapi.getObject(pgpu.$ref).dom0_access === 'enabled')
      await rpc(daemon.url, 'session.logout', [session])
    } finally {
      await xapi.disconnect()
      daemon.stop()
    }
  })
}
