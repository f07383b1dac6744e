// Xen Orchestra's hide and unhide flows (xo.mjs) against a host named by
// the environment, a real one across real reboots (tests/lab) or a mock:
//
//   PCIPASS_XO_URL=https://127.0.0.1:8443/ PCIPASS_XO_USER=root \
//   PCIPASS_XO_PASSWORD=... PCIPASS_XO_PCI=0000:00:04.0 \
//     node tests/node/xo_lab.mjs [hide|unhide|both]
//
// hide: PCI.disable_dom0_access as XO calls it, host.disable,
// host.evacuate, Async.host.reboot, XO's wait for agent_start_time to move
// and the host to be enabled, then PCI.get_dom0_access_status must say
// `disabled` (xo-web's isPciHidden). unhide: the same with
// enable_dom0_access, ending `enabled`. both (the default): hide, then
// unhide. The TLS certificate is not checked (XO's allowUnauthorized).
//
// Optional: PCIPASS_XO_RESTART_TIMEOUT_S, the bound on each wait for the
// host to come back (default 1800: a reboot under emulation takes minutes;
// XO waits without one); PCIPASS_XO_EVENT_POLL_DELAY_MS, the connector's
// pause after a failed event poll (default: the connector's minute, as in
// XO). One line per step; the last line says PASS or FAIL, and the exit
// code is 0 only on PASS.
import { cached, connect, isPciPassthroughAvailable, setDom0Access, statuses } from './xo.mjs'

const started = Date.now()
let phase = 'setup'
const elapsed = () => Math.round((Date.now() - started) / 1000)
const say = line => console.log(`[xo-lab +${elapsed()} s] ${phase}: ${line}`)

// While the host is down, the connector's event loop reports each failed
// poll with console.warn ('_watchEvents', error) and a whole stack; one
// line says as much.
const warn = console.warn
console.warn = (...args) => {
  const error = args.find(a => a instanceof Error)
  if (typeof args[0] === 'string' && args[0].startsWith('_') && error !== undefined) {
    const what = args.filter(a => typeof a === 'string').join(' ')
    say(`connector: ${what}: ${error.code ?? error.message}; it tries again`)
  } else {
    warn(...args)
  }
}

function env (name, fallback) {
  const value = process.env[name] ?? fallback
  if (value === undefined || value === '') throw new Error(`${name} is not set`)
  return value
}

const describe = error => {
  const inner = error?.errors ?? []
  const text = error?.code !== undefined ? `${error.code} ${JSON.stringify(error.params ?? [])}` : String(error?.message ?? error)
  return inner.length > 0 ? `${text}: ${inner.map(describe).join('; ')}` : text
}

const WANT = { hide: ['enabled', 'disabled'], unhide: ['disabled', 'enabled'] }

async function run (xapi, bdf, which, restartTimeoutMs) {
  phase = which
  const find = () => cached(xapi, 'PCI').find(p => p.pci_id === bdf)
  const [from, to] = WANT[which]
  const pci = find()
  const [now] = await statuses(xapi, [pci])
  if (now !== from) throw new Error(`${bdf} is ${now}; ${which} starts from ${from}`)
  say(`${bdf} is ${now}`)
  await setDom0Access(xapi, [pci], which === 'hide', { log: say, restartTimeoutMs })
  // Found again by address: the toolstack that answers now is another
  // process than the one that started the flow.
  const again = find()
  if (again === undefined) throw new Error(`no PCI ${bdf} after the reboot`)
  const [after] = await statuses(xapi, [again])
  if (after !== to) throw new Error(`after the reboot ${bdf} is ${after}, want ${to}`)
  say(`PCI.get_dom0_access_status(${bdf}): ${after}, as wanted`)
}

async function main () {
  const which = process.argv[2] ?? 'both'
  const phases = which === 'both' ? ['hide', 'unhide'] : [which]
  if (!phases.every(p => p in WANT)) throw new Error(`unknown phase ${which}: hide, unhide or both`)
  const url = env('PCIPASS_XO_URL')
  const bdf = env('PCIPASS_XO_PCI')
  const restartTimeoutMs = 1000 * +env('PCIPASS_XO_RESTART_TIMEOUT_S', '1800')
  const delay = process.env.PCIPASS_XO_EVENT_POLL_DELAY_MS
  const xapi = await connect({
    url,
    user: env('PCIPASS_XO_USER'),
    password: env('PCIPASS_XO_PASSWORD'),
    eventPollDelay: delay === undefined ? undefined : +delay,
    timeoutMs: 300000
  })
  try {
    const [host] = cached(xapi, 'host')
    const { product_brand: brand, product_version: version } = host.software_version
    say(`connected to ${url} as ${env('PCIPASS_XO_USER')}: host ${host.name_label}, ${brand} ${version}, ` +
      `enabled ${host.enabled}, agent_start_time ${host.other_config.agent_start_time}`)
    say(`xo-web would offer its PCI controls: ${isPciPassthroughAvailable(host) ? 'yes' : 'no (XCP-ng 8.3 or later only)'}`)
    const pci = cached(xapi, 'PCI').find(p => p.pci_id === bdf)
    if (pci === undefined) {
      const known = cached(xapi, 'PCI').map(p => p.pci_id).sort().join(' ')
      throw new Error(`no PCI ${bdf} on the host (it has ${known})`)
    }
    say(`${bdf}: ${pci.class_name}, ${pci.device_name}`)
    for (const p of phases) await run(xapi, bdf, p, restartTimeoutMs)
  } finally {
    await xapi.disconnect()
  }
  return phases
}

main().then(
  phases => {
    console.log(`[xo-lab +${elapsed()} s] PASS: ${phases.join(', ')}`)
    process.exit(0)
  },
  error => {
    console.log(`[xo-lab +${elapsed()} s] FAIL in ${phase}: ${describe(error)}`)
    process.exit(1)
  }
)
