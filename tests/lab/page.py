"""The page on the host (docs/page.md), on the real lab: Debian's
chromium, headless, against the lab pcipassd's own page over TLS (its
self-signed certificate accepted), logged in as root through PAM, the
statuses it shows held against the API and the real host's boot
configuration. Run in the xcp-ng case, whose edits need no initramfs
rebuild, so the step costs about a minute and no reboot (the reboots of
the flow are Xen Orchestra's in the same case and the mock's in
tests/python/test_page.py)."""

import pathlib
import sys

from vm import HDA, NIC, USB

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))
import webdriver  # noqa: E402  (tests/python/webdriver.py)
from webdriver import wait_until  # noqa: E402

SHOTS = pathlib.Path(__file__).resolve().parents[2] / "target/lab/page-screenshots"


def page_step(vm, dom0, check):
    """The step: returns its fact for the report, raises through `check`."""
    def go():
        why = webdriver.why_not()
        check(why is None, f"no browser: {why}")
        SHOTS.mkdir(parents=True, exist_ok=True)
        url = f"https://127.0.0.1:{vm.api_port}/"
        with webdriver.Browser(extra_args=["--ignore-certificate-errors"]) as b:
            shot = iter(range(1, 100))

            def snap(name):
                b.screenshot(SHOTS / f"{next(shot):02d}-{name}.png")

            def status(bdf):
                cells = b.find_all(f'table#pcis tr[data-pci="{bdf}"] td.status')
                return cells[0].text.strip() if cells else None

            def wait_status(bdf, want):
                wait_until(lambda: status(bdf) == want, timeout=120,
                           what=f"the page to show {bdf} {want} (it shows {status(bdf)})")

            b.get(url)
            b.wait_for("form#login")
            b.find("input#user").send_keys("root")
            b.find("input#password").send_keys(vm.password)
            b.find("button#login-submit").click()
            wait_until(lambda: b.find("#who").text.strip() == "root", timeout=60,
                       what="root to be logged in")
            for bdf in (NIC, USB, HDA):
                wait_status(bdf, dom0.status(bdf))
            snap("table")

            # The readiness the real host reports for the USB controller.
            b.find(f'table#pcis tr[data-pci="{USB}"] button.readiness').click()
            b.wait_for("dialog#readiness")
            readiness = b.find("dialog#readiness dl").text
            check("verdict" in readiness, f"no verdict in the readiness dialog: {readiness!r}")
            snap("readiness")
            b.find("button#readiness-close").click()
            b.wait_gone("dialog#readiness")

            # Hide at the next boot, the dry run first; the real grub.cfg has it.
            b.find(f'table#pcis tr[data-pci="{USB}"] button.hide').click()
            b.wait_for("dialog#preview")
            diff = wait_until(lambda: b.find("pre#preview-diff").text, timeout=120,
                              what="the dry run's diff")
            check(f"xen-pciback.hide=({USB})" in diff, f"the diff does not hide {USB}: {diff!r}")
            snap("hide-preview")
            b.find("button#apply-next-boot").click()
            b.wait_gone("dialog#preview", timeout=300)
            wait_status(USB, "disable_on_reboot")
            grub = vm.run("grep -c 'xen-pciback.hide=(" + USB + ")' /boot/grub/grub.cfg || true").strip()
            check(grub != "0", "the real grub.cfg does not hide the USB controller")
            check(dom0.status(USB) == "disable_on_reboot", f"the API says {dom0.status(USB)}")
            snap("disable-on-reboot")

            # Give it back before any reboot: enabled again, grub.cfg clean.
            b.find(f'table#pcis tr[data-pci="{USB}"] button.unhide').click()
            b.wait_for("dialog#preview")
            wait_until(lambda: b.find("pre#preview-diff").text, timeout=120, what="the diff")
            b.find("button#apply-next-boot").click()
            b.wait_gone("dialog#preview", timeout=300)
            wait_status(USB, "enabled")

            # An edit by hand with the packaged xen-cmdline shows without a reload.
            b.execute_script("window.__labMarker = 1;")
            vm.run(f"xen-cmdline --set-dom0 'xen-pciback.hide=({HDA})'")
            wait_status(HDA, "disable_on_reboot")
            check(b.execute_script("return window.__labMarker;") == 1, "the page was reloaded")
            snap("outside-edit")
            vm.run("xen-cmdline --delete-dom0 xen-pciback.hide")
            wait_status(HDA, "enabled")
            errors = [e["message"] for e in b.browser_log()
                      if e.get("source") in ("security", "javascript")]
            check(not errors, f"the page logged errors: {errors}")
        return (f"root logged in on {url}; {USB} hidden at the next boot after its dry run, "
                f"on the real grub.cfg, given back; {HDA} hidden by hand with xen-cmdline "
                f"showed live; screenshots in {SHOTS}")
    return go
