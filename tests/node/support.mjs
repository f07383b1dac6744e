// Shared by the Node tests: a real pcipassd on a fresh demo mock host.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'

const BIN = process.env.PCIPASS_BIN_DIR ?? resolve(import.meta.dirname, '../../target/debug')

export async function startDaemon (extraArgs = []) {
  const dir = mkdtempSync(join(tmpdir(), 'pcipass-xo-'))
  const root = join(dir, 'root')
  const state = join(dir, 'state')
  execFileSync(join(BIN, 'pcipass'), ['mock-host', 'create', root, '--profile', 'demo'])
  execFileSync(join(BIN, 'pcipass'), ['user-add', 'xo', '--role', 'pool-admin', '--state-dir', state], { input: 'xo-secret\n' })
  const proc = spawn(join(BIN, 'pcipassd'), [
    '--root', root, '--state-dir', state, '--listen', '127.0.0.1:0',
    '--unix', join(dir, 'xapi.sock'), '--watch-interval-ms', '100', ...extraArgs
  ], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: process.env.PCIPASS_TEST_LOG ?? 'warn' } })
  const url = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout })
    lines.on('line', line => {
      const m = line.match(/listening on (https?:\/\/\S+)/)
      if (m) resolve(m[1].replace(/\/$/, ''))
    })
    proc.on('exit', code => reject(new Error(`pcipassd exited ${code}`)))
  })
  return {
    url,
    root,
    grubCfg: join(root, 'boot/grub/grub.cfg'),
    xenCmdline: (...args) => execFileSync(join(BIN, 'xen-cmdline'), ['--root', root, ...args]).toString(),
    stop () { proc.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }) }
  }
}

export const within = (ms, what, promise) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms).unref())
])

