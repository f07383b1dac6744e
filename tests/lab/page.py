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


class PageRun:
    """One headless Chromium on the lab pcipassd's page, across steps."""

    def __init__(self, vm, dom0, check):
        self.vm, self.dom0, self.check = vm, dom0, check
        self.url = f"https://127.0.0.1:{vm.api_port}/"
        self.browser = None
        self.shots = iter(range(1, 100))

    def open(self):
        why = webdriver.why_not()
        self.check(why is None, f"no browser: {why}")
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.browser = webdriver.Browser(extra_args=["--ignore-certificate-errors"])
        self.browser.get(self.url)

    def close(self):
        if self.browser:
            self.browser.quit()
            self.browser = None

    def snap(self, name):
        self.browser.screenshot(SHOTS / f"{next(self.shots):02d}-{name}.png")

    def status(self, bdf):
        cells = self.browser.find_all(f'table#pcis tr[data-pci="{bdf}"] td.status')
        return cells[0].text.strip() if cells else None

    def wait_status(self, bdf, want):
        wait_until(lambda: self.status(bdf) == want, timeout=120,
                   what=f"the page to show {bdf} {want} (it shows {self.status(bdf)})")

    def logged_in(self):
        """Log in as root on the form if the page shows it (a reboot ended
        every session)."""
        b = self.browser
        wait_until(lambda: b.find("form#login").is_displayed() or b.find("#who").is_displayed(),
                   timeout=60, what="the login form or the user")
        if b.find("form#login").is_displayed():
            b.find("input#user").clear()
            b.find("input#user").send_keys("root")
            b.find("input#password").clear()
            b.find("input#password").send_keys(self.vm.password)
            b.find("button#login-submit").click()
        wait_until(lambda: b.find("#who").text.strip() == "root", timeout=60,
                   what="root to be logged in")

    def edit(self, bdf, button, want):
        """`button` of `bdf`'s row, its dry run shown, applied at the next
        boot: the page shows `want`. The diff's text."""
        b = self.browser
        b.find(f'table#pcis tr[data-pci="{bdf}"] button.{button}').click()
        b.wait_for("dialog#preview")
        diff = wait_until(lambda: b.find("pre#preview-diff").text, timeout=120,
                          what="the dry run's diff")
        self.snap(f"{button}-preview")
        b.find("button#apply-next-boot").click()
        # The apply may rebuild the initramfs: minutes under TCG.
        b.wait_gone("dialog#preview", timeout=900)
        self.wait_status(bdf, want)
        return diff

    def errors(self):
        return [e["message"] for e in self.browser.browser_log()
                if e.get("source") in ("security", "javascript")]


def page_hide_step(run):
    """Before Xen Orchestra's reboot: root logs in on the page, the
    statuses shown are the API's, the USB controller's readiness, a hide
    at the next boot after its dry run (in the real grub.cfg), a give-back
    and the hide again, which the reboot then makes effective; and a hand
    edit with the packaged xen-cmdline shown without a reload."""
    def go():
        vm, dom0, check = run.vm, run.dom0, run.check
        run.open()
        b = run.browser
        run.logged_in()
        for bdf in (NIC, USB, HDA):
            run.wait_status(bdf, dom0.status(bdf))
        run.snap("table")

        b.find(f'table#pcis tr[data-pci="{USB}"] button.readiness').click()
        b.wait_for("dialog#readiness")
        readiness = b.find("dialog#readiness dl").text
        check("verdict" in readiness, f"no verdict in the readiness dialog: {readiness!r}")
        run.snap("readiness")
        b.find("button#readiness-close").click()
        b.wait_gone("dialog#readiness")

        diff = run.edit(USB, "hide", "disable_on_reboot")
        check(f"({USB})" in diff and "xen-pciback.hide=" in diff, f"the diff does not hide {USB}: {diff!r}")
        grub = vm.run(f"grep -c 'xen-pciback.hide=.*({USB})' /boot/grub/grub.cfg || true").strip()
        check(grub != "0", "the real grub.cfg does not hide the USB controller")
        check(dom0.status(USB) == "disable_on_reboot", f"the API says {dom0.status(USB)}")
        run.edit(USB, "unhide", "enabled")
        run.edit(USB, "hide", "disable_on_reboot")

        # A hand edit with the packaged xen-cmdline, shown without a
        # reload: the list taken out (the USB controller enabled again),
        # then put back. Neither needs an initramfs rebuild (xen-pciback's
        # softdep for xhci_hcd stays); adding another function would, at
        # minutes under TCG each way.
        b.execute_script("window.__labMarker = 1;")
        current = vm.run("xen-cmdline --get-dom0 xen-pciback.hide").strip()
        check(current == f"xen-pciback.hide=({USB})", f"xen-cmdline reads {current!r}")
        vm.run("xen-cmdline --delete-dom0 xen-pciback.hide")
        run.wait_status(USB, "enabled")
        run.snap("hand-edit")
        vm.run(f"xen-cmdline --set-dom0 '{current}'")
        run.wait_status(USB, "disable_on_reboot")
        check(b.execute_script("return window.__labMarker;") == 1, "the page was reloaded")
        errors = run.errors()
        check(not errors, f"the page logged errors: {errors}")
        return (f"root logged in on {run.url}; {USB} hidden at the next boot after its dry run "
                f"(real grub.cfg), given back, hidden again; xen-cmdline's removal and "
                f"restoration of the list shown live")
    return go


def page_after_reboot_step(run):
    """After Xen Orchestra's reboot: the page (logged in again) shows the
    USB controller `disabled`, as the real host has it; given back after
    its dry run: `enable_on_reboot`, for the next reboot."""
    def go():
        run.check(run.browser is not None, "the page was not opened before the reboot")
        run.browser.get(run.url)
        run.logged_in()
        run.wait_status(USB, "disabled")
        driver = run.dom0.driver(USB)
        run.check(driver == "pciback", f"{USB} is bound to {driver}")
        run.snap("disabled-after-reboot")
        run.edit(USB, "unhide", "enable_on_reboot")
        errors = run.errors()
        run.close()
        run.check(not errors, f"the page logged errors: {errors}")
        return f"{USB} disabled after the real reboot (pciback), given back: enable_on_reboot"
    return go
