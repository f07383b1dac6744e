// Xen Orchestra's unmodified `xen-api` connector logging in with a host
// account through PAM (`--auth pam --role-group`), as XO logs in to a host
// with its root password. Creates a group, a user in it, one outside it and
// a locked one (and /etc/pam.d/pcipass when missing), then removes them.
// Needs root and the shadow tools: skipped elsewhere, never under CI=true.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, unlinkSync } from 'node:fs'
import { resolve } from 'node:path'
import { createClient } from 'xen-api'

import { startDaemon, within } from './support.mjs'

const GROUP = 'pcipass-xo-ops'
const USERS = { 'pcipass-xo-in': true, 'pcipass-xo-out': false, 'pcipass-xo-lock': true }
const PASSWORD = 'xo-Secret-9'
const PAM_FILE = '/etc/pam.d/pcipass'

function cannotRun () {
  if (process.getuid() !== 0) return 'not root: cannot create Unix accounts'
  if (!existsSync('/etc/pam.d/common-auth')) return 'no Debian-style PAM set-up'
  try { execFileSync('sh', ['-c', 'command -v useradd groupadd chpasswd']) } catch { return 'shadow tools missing' }
  return null
}

const why = cannotRun()
if (why && process.env.CI === 'true') throw new Error(`PAM logins cannot be tested in CI: ${why}`)

let installedPam = false
function removeAccounts () {
  for (const user of Object.keys(USERS)) {
    try { execFileSync('userdel', ['-f', user], { stdio: 'ignore' }) } catch {}
  }
  try { execFileSync('groupdel', [GROUP], { stdio: 'ignore' }) } catch {}
}

function setUp () {
  removeAccounts() // what an interrupted run left
  if (!existsSync(PAM_FILE)) {
    copyFileSync(resolve(import.meta.dirname, '../../scripts/pam.d/pcipass'), PAM_FILE)
    installedPam = true
  }
  execFileSync('groupadd', [GROUP])
  for (const [user, inGroup] of Object.entries(USERS)) {
    execFileSync('useradd', ['-M', '-s', '/usr/sbin/nologin', ...(inGroup ? ['-G', GROUP] : []), user])
    execFileSync('chpasswd', [], { input: `${user}:${PASSWORD}\n` })
  }
  execFileSync('usermod', ['-L', 'pcipass-xo-lock'])
}

after(() => {
  if (why) return
  removeAccounts()
  if (installedPam) unlinkSync(PAM_FILE)
})

// No object cache: only the login is under test (a closed event loop
// would wait its minute-long retry delay before the test could end).
const login = (url, user, password) =>
  createClient({ url, auth: { user, password }, allowUnauthorized: true, transport: 'json-rpc', watchEvents: false })

test('XO connects with a host account through PAM', { skip: why ?? false }, async () => {
  setUp()
  const daemon = await startDaemon(['--auth', 'pam', '--role-group', `${GROUP}=pool-operator`])
  const clients = []
  try {
    const xapi = login(daemon.url, 'pcipass-xo-in', PASSWORD)
    clients.push(xapi)
    await within(60000, 'connect', xapi.connect())
    assert.equal(xapi.status, 'connected')
    // The connector forbids session.* calls: ask over plain JSON-RPC.
    const res = await fetch(daemon.url + '/jsonrpc', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'session.get_record', params: [xapi.sessionId, xapi.sessionId] })
    })
    const { result: session } = await res.json()
    assert.equal(session.auth_user_name, 'pcipass-xo-in')
    // pool-operator may hide a device.
    const [pci] = Object.keys(await xapi.call('PCI.get_all_records')).filter(Boolean)
    assert.ok(['enabled', 'disabled', 'disable_on_reboot', 'enable_on_reboot']
      .includes(await xapi.call('PCI.get_dom0_access_status', pci)))

    for (const [user, password] of [['pcipass-xo-in', 'wrong'], ['pcipass-xo-out', PASSWORD], ['pcipass-xo-lock', PASSWORD]]) {
      const refused = login(daemon.url, user, password)
      clients.push(refused)
      await assert.rejects(within(60000, `connect ${user}`, refused.connect()),
        e => e.code === 'SESSION_AUTHENTICATION_FAILED', user)
    }
  } finally {
    for (const c of clients) await c.disconnect().catch(() => {})
    daemon.stop()
  }
})
