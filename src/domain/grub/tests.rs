//! grub.cfg as GRUB reads it, on the files the real tools leave
//! (`tests/fixtures/grub-real/`: XCP-ng's real `xen-cmdline`, Debian 12's
//! real `grub-mkconfig`) and on hand-made cases for each rule.

use super::*;
use crate::domain::hide::HideView;

fn fixture(name: &str) -> Vec<u8> {
    let dir = env!("CARGO_MANIFEST_DIR");
    std::fs::read(format!("{dir}/tests/fixtures/{name}")).unwrap()
}

fn parse(text: &[u8]) -> GrubConfig {
    GrubConfig::parse(text, &GrubEnv::absent()).unwrap()
}

fn dom0(config: &GrubConfig) -> String {
    String::from_utf8(config.boot_cmdline().unwrap().bytes).unwrap()
}

fn hide_edit(value: &str) -> Edit<'_> {
    Edit::Set {
        key: "xen-pciback.hide",
        value: Some(value),
        matching: Matching::Kernel,
    }
}

const HIDE_DELETE: Edit<'static> = Edit::Delete {
    key: "xen-pciback.hide",
    matching: Matching::Kernel,
};

fn hidden_at_boot(config: &GrubConfig) -> Option<String> {
    HideView::from_cmdline(&config.boot_cmdline().unwrap().bytes).value_text()
}

/// (fixture, title GRUB boots, the dom0 command line the kernel gets)
const REAL: [(&str, &str, &str); 6] = [
    (
        "grub-real/xcpng-after-real-xen-cmdline.cfg",
        "XCP-ng",
        "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles",
    ),
    (
        "grub-real/xcpng-default-fallback.cfg",
        "XCP-ng (Xen 4.17.5 / Linux 4.19.0+1)",
        "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0",
    ),
    (
        "grub-real/xcpng-duplicate-hide-key.cfg",
        "XCP-ng",
        "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles xen-pciback.hide=(0000:01:00.0) xen-pciback.hide=(0000:03:00.1)",
    ),
    (
        "grub-real/xcpng-quoted-hide.cfg",
        "XCP-ng",
        "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles \"xen-pciback.hide=(0000:01:00.0) (0000:03:00.1)\"",
    ),
    (
        "grub-real/xcpng-hide-via-xen-kextra.cfg",
        "XCP-ng",
        "root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles xen-pciback.hide=(0000:01:00.0)",
    ),
    (
        "grub-real/debian12-grub-mkconfig.cfg",
        "Debian GNU/Linux, with Xen hypervisor",
        "placeholder root=/dev/nvme0n1p2 ro quiet console=hvc0 xen-pciback.hide=(0000:01:00.0)(0000:01:00.1)",
    ),
];

#[test]
fn real_files_boot_the_entry_and_command_line_the_real_tools_read() {
    for (name, title, cmdline) in REAL {
        let config = parse(&fixture(name));
        assert_eq!(config.default_entry().unwrap().title, title, "{name}");
        assert_eq!(dom0(&config), cmdline, "{name}");
    }
}

#[test]
fn hide_values_of_the_real_files_as_the_kernel_takes_them() {
    let want = [
        ("grub-real/xcpng-after-real-xen-cmdline.cfg", None),
        (
            "grub-real/xcpng-duplicate-hide-key.cfg",
            Some("(0000:03:00.1)"),
        ),
        (
            "grub-real/xcpng-quoted-hide.cfg",
            Some("(0000:01:00.0) (0000:03:00.1)"),
        ),
        (
            "grub-real/xcpng-hide-via-xen-kextra.cfg",
            Some("(0000:01:00.0)"),
        ),
        (
            "grub-real/debian12-grub-mkconfig.cfg",
            Some("(0000:01:00.0)(0000:01:00.1)"),
        ),
    ];
    for (name, value) in want {
        assert_eq!(
            hidden_at_boot(&parse(&fixture(name))).as_deref(),
            value,
            "{name}"
        );
    }
}

#[test]
fn an_indented_set_default_inside_if_counts_only_with_override_entry() {
    let text = fixture("grub-real/xcpng-after-real-xen-cmdline.cfg");
    assert_eq!(parse(&text).default_source(), &DefaultSource::Config);
    let env = GrubEnv::parse(b"# GRUB Environment Block\noverride_entry=2\n##########");
    let once = GrubConfig::parse(&text, &env).unwrap();
    assert_eq!(once.default_entry().unwrap().title, "XCP-ng in Safe Mode");
    assert_eq!(
        once.default_source(),
        &DefaultSource::GrubEnv("override_entry=2".into())
    );
    // Without load_env the variable never reaches GRUB's script.
    let no_load = String::from_utf8(text.clone())
        .unwrap()
        .replace("\tload_env\n", "");
    let config = GrubConfig::parse(no_load.as_bytes(), &env).unwrap();
    assert_eq!(config.default_entry().unwrap().title, "XCP-ng");
}

#[test]
fn debian_next_entry_is_a_one_time_default() {
    let text = fixture("grub-real/debian12-grub-mkconfig.cfg");
    let env = GrubEnv::parse(b"next_entry=Debian GNU/Linux\n");
    let config = GrubConfig::parse(&text, &env).unwrap();
    assert!(matches!(
        config.default_entry(),
        Err(GrubError::DefaultNotXen(_))
    ));
    let env = GrubEnv::parse(
        b"next_entry=Advanced options for Debian GNU/Linux (with Xen hypervisor)>xen-hypervisor-4.17-amd64-3f1c2a9e-5b7d-4e0a-9c61-2d8f4b7e1a53>1\n",
    );
    let config = GrubConfig::parse(&text, &env).unwrap();
    assert!(
        config
            .default_entry()
            .unwrap()
            .title
            .ends_with("(recovery mode)")
    );
}

#[test]
fn a_default_on_an_undecidable_condition_is_an_error() {
    let text = b"if [ x$feature_timeout_style = xy ]; then\n  set default=1\nfi\nmenuentry 'X' {\n\tmultiboot2 /xen\n\tmodule2 /vmlinuz ro\n}\n";
    assert!(matches!(
        GrubConfig::parse(text, &GrubEnv::absent())
            .unwrap()
            .default_entry(),
        Err(GrubError::DefaultUncertain(_))
    ));
}

#[test]
fn a_default_naming_nothing_boots_entry_zero() {
    let text = String::from_utf8(fixture("grub/xcpng-grub.cfg")).unwrap();
    for default in ["set default=9", "set default='No such entry'"] {
        let config = parse(text.replace("set default=0", default).as_bytes());
        assert_eq!(config.default_entry().unwrap().title, "XCP-ng", "{default}");
        assert!(matches!(
            config.default_source(),
            DefaultSource::Fallback(_)
        ));
    }
    let config = parse(
        text.replace("set default=0", "set default='XCP-ng (Serial)'")
            .as_bytes(),
    );
    assert_eq!(config.default_entry().unwrap().title, "XCP-ng (Serial)");
}

#[test]
fn broken_files_are_refused() {
    for name in [
        "grub/xcpng-grub-no-multiboot.cfg",
        "grub/xcpng-grub-no-hypervisor.cfg",
        "grub/xcpng-grub-linux.cfg",
    ] {
        assert_eq!(
            GrubConfig::parse(&fixture(name), &GrubEnv::absent()),
            Err(GrubError::NoXenEntry),
            "{name}"
        );
    }
}

fn changed_lines(before: &[u8], after: &[u8]) -> Vec<(String, String)> {
    let (b, a) = (
        String::from_utf8_lossy(before),
        String::from_utf8_lossy(after),
    );
    assert_eq!(b.lines().count(), a.lines().count());
    b.lines()
        .zip(a.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, y)| (x.to_owned(), y.to_owned()))
        .collect()
}

#[test]
fn edits_go_to_the_real_tools_entries_byte_for_byte() {
    let text = fixture("grub-real/xcpng-after-real-xen-cmdline.cfg");
    let config = parse(&text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(0000:01:00.0)"))
        .unwrap();
    let changed = changed_lines(&text, &out);
    assert_eq!(
        changed.len(),
        2,
        "the XCP-ng and XCP-ng (Serial) dom0 lines"
    );
    for (before, after) in &changed {
        assert_eq!(format!("{before} xen-pciback.hide=(0000:01:00.0)"), *after);
    }
    let again = config.reparsed(&out).unwrap();
    assert_eq!(hidden_at_boot(&again).as_deref(), Some("(0000:01:00.0)"));
    assert_eq!(again.edited(Target::Dom0, &HIDE_DELETE).unwrap(), text);
}

#[test]
fn a_fallback_default_is_edited_too_so_the_next_boot_gets_the_change() {
    let text = fixture("grub-real/xcpng-default-fallback.cfg");
    let config = parse(&text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(0000:01:00.0)"))
        .unwrap();
    assert_eq!(
        changed_lines(&text, &out).len(),
        3,
        "XCP-ng, (Serial) and the fallback"
    );
    assert_eq!(
        hidden_at_boot(&config.reparsed(&out).unwrap()).as_deref(),
        Some("(0000:01:00.0)")
    );
}

#[test]
fn the_effective_occurrence_is_rewritten_in_place() {
    let text = fixture("grub-real/xcpng-duplicate-hide-key.cfg");
    let config = parse(&text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(0000:03:00.1)(0000:02:00.0)"))
        .unwrap();
    let changed = changed_lines(&text, &out);
    // The effective copy is rewritten in place; the earlier one goes.
    assert!(
        changed[0]
            .1
            .ends_with(" xen-pciback.hide=(0000:03:00.1)(0000:02:00.0)")
    );
    assert!(!changed[0].1.contains("(0000:01:00.0)"));
    // A delete removes every occurrence: the earlier one must not come back.
    let gone = config.edited(Target::Dom0, &HIDE_DELETE).unwrap();
    assert_eq!(hidden_at_boot(&config.reparsed(&gone).unwrap()), None);
}

#[test]
fn a_quoted_value_is_replaced_whole() {
    let text = fixture("grub-real/xcpng-quoted-hide.cfg");
    let config = parse(&text);
    let out = config
        .edited(
            Target::Dom0,
            &hide_edit("(0000:01:00.0)(0000:03:00.1)(0000:04:00.0)"),
        )
        .unwrap();
    let changed = changed_lines(&text, &out);
    assert_eq!(changed.len(), 2);
    assert!(
        changed[0]
            .1
            .ends_with(" xen-pciback.hide=(0000:01:00.0)(0000:03:00.1)(0000:04:00.0)")
    );
}

#[test]
fn dom0_arguments_after_double_dash_on_the_xen_line_move_to_the_dom0_line() {
    let text = fixture("grub-real/xcpng-hide-via-xen-kextra.cfg");
    let config = parse(&text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(0000:01:00.0)(0000:02:00.0)"))
        .unwrap();
    let after = config.reparsed(&out).unwrap();
    assert_eq!(
        hidden_at_boot(&after).as_deref(),
        Some("(0000:01:00.0)(0000:02:00.0)")
    );
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("-- xen-pciback"), "{out}");
    assert!(
        out.contains("console=vga vga=mode-0x0311\n"),
        "an empty ` -- ` goes with its last argument"
    );
}

#[test]
fn a_new_argument_goes_before_a_bare_double_dash() {
    let text = b"menuentry 'X' {\n\tmultiboot2 /xen iommu=1 -- quiet\n\tmodule2 /vmlinuz ro -- single\n}\n";
    let config = parse(text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(01:00.0)"))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out)
            .contains("module2 /vmlinuz ro xen-pciback.hide=(01:00.0) -- single")
    );
    let set = Edit::Set {
        key: "dom0_mem",
        value: Some("1G"),
        matching: Matching::Exact,
    };
    let out = config.edited(Target::Xen, &set).unwrap();
    assert!(String::from_utf8_lossy(&out).contains("multiboot2 /xen iommu=1 dom0_mem=1G -- quiet"));
}

#[test]
fn latin1_and_other_non_utf8_bytes_survive_an_edit() {
    let mut text = b"# r\xe9glage de l'\xe9cran \xff\xfe\n".to_vec();
    text.extend(fixture("grub/xcpng-grub.cfg"));
    let config = parse(&text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(0000:01:00.0)"))
        .unwrap();
    assert!(out.starts_with(b"# r\xe9glage de l'\xe9cran \xff\xfe\n"));
    assert_eq!(
        config
            .reparsed(&out)
            .unwrap()
            .edited(Target::Dom0, &HIDE_DELETE)
            .unwrap(),
        text
    );
}

#[test]
fn an_argument_less_kernel_line_keeps_its_path() {
    let text = b"menuentry 'X' {\n\tmultiboot2 /boot/xen.gz\n\tmodule2 /boot/vmlinuz\n}\n";
    let config = parse(text);
    let out = config
        .edited(Target::Dom0, &hide_edit("(01:00.0)"))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out)
            .contains("\tmodule2 /boot/vmlinuz xen-pciback.hide=(01:00.0)\n")
    );
    assert_eq!(
        config
            .reparsed(&out)
            .unwrap()
            .edited(Target::Dom0, &HIDE_DELETE)
            .unwrap(),
        text
    );
}

#[test]
fn lines_grub_and_the_kernel_split_differently_are_not_edited() {
    for line in [
        "module2 /vmlinuz ro a=\"x\\\"y\"",
        "module2 /vmlinuz ro ${extra}",
        "module2 /vmlinuz ro 'unclosed",
    ] {
        let text = format!("menuentry 'X' {{\n\tmultiboot2 /xen\n\t{line}\n}}\n");
        let config = parse(text.as_bytes());
        assert!(
            matches!(
                config.edited(Target::Dom0, &hide_edit("(01:00.0)")),
                Err(GrubError::Unsupported { .. })
            ),
            "{line}"
        );
    }
}

#[test]
fn grub_quotes_a_word_with_a_space_and_escapes_quotes() {
    let words = [b"a b".to_vec(), b"it's".to_vec(), b"\\x41".to_vec()];
    assert_eq!(loader_cmdline(&words), b"\"a b\" it\\'s \\x41");
}

#[test]
fn xen_appends_what_follows_double_dash_and_cuts_at_1023() {
    let c = xen_dom0_cmdline(b"dom0_mem=1G --   a=1 b", b"  ro");
    assert_eq!(c.bytes, b"ro a=1 b");
    assert_eq!(
        xen_dom0_cmdline(b"-- a=1", b"ro").bytes,
        b"ro",
        "no space before --"
    );
    let long = vec![b'x'; 1100];
    let c = xen_dom0_cmdline(b"", &long);
    assert_eq!((c.bytes.len(), c.full_len), (1023, 1100));
}

#[test]
fn an_edit_past_xens_limit_is_refused() {
    let pad = "x".repeat(1000);
    let text = format!("menuentry 'X' {{\n\tmultiboot2 /xen\n\tmodule2 /vmlinuz {pad}\n}}\n");
    let config = parse(text.as_bytes());
    assert_eq!(
        config.edited(Target::Dom0, &hide_edit("(0000:01:00.0)(0000:02:00.0)")),
        Err(GrubError::TooLong {
            what: "dom0 command line",
            length: 1000 + 1 + 17 + 28,
            limit: 1023
        })
    );
    let value = "(0000:01:00.0)".repeat(74);
    let small = parse(b"menuentry 'X' {\n\tmultiboot2 /xen\n\tmodule2 /vmlinuz\n}\n");
    assert!(matches!(
        small.edited(Target::Dom0, &hide_edit(&value)),
        Err(GrubError::TooLong { limit: 1024, .. })
    ));
}

#[test]
fn xen_cmdline_occurrences_are_exact_and_in_order() {
    let config = parse(&fixture("grub-real/xcpng-duplicate-hide-key.cfg"));
    let got: Vec<Vec<u8>> = config
        .occurrences_at(Target::Dom0, "xen-pciback.hide")
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        got,
        [
            b"xen-pciback.hide=(0000:01:00.0)".to_vec(),
            b"xen-pciback.hide=(0000:03:00.1)".to_vec()
        ]
    );
    assert!(
        config
            .occurrences_at(Target::Dom0, "xen_pciback.hide")
            .unwrap()
            .is_empty()
    );
    assert!(
        config
            .occurrences_at(Target::Dom0, "xen-pciback")
            .unwrap()
            .is_empty()
    );
    assert_eq!(config.occurrences_at(Target::Dom0, "ro").unwrap().len(), 1);
}

#[test]
fn defaults_walk_the_menu_as_grub_does() {
    // Debian's menu: 0 native entry, 1 native submenu, 2 the Xen entry,
    // 3 the Xen submenu > 0 the Xen version submenu > 0, 1 entries.
    let text = fixture("grub-real/debian12-grub-mkconfig.cfg");
    let xen = "Debian GNU/Linux, with Xen hypervisor";
    let advanced = "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-28-amd64";
    let submenu = "Advanced options for Debian GNU/Linux (with Xen hypervisor)";
    for (spec, booted, fell_back) in [
        ("2", Some(xen), false),
        ("0x2", Some(xen), false),
        ("2>7", Some(xen), false),
        ("3>0>1", Some("recovery"), false),
        // A number past the end, or a name that matches nothing, is item
        // 0 of its menu; a submenu with nothing left boots its item 0.
        ("3>5", Some(advanced), true),
        ("3>0>9", Some(advanced), true),
        (submenu, Some(advanced), false),
        ("1", None, false),
        ("no such entry", None, true),
    ] {
        let env = GrubEnv::parse(format!("next_entry={spec}\n").as_bytes());
        let config = GrubConfig::parse(&text, &env).unwrap();
        match booted {
            Some(title) => assert!(
                config.default_entry().unwrap().title.contains(title),
                "{spec}: {:?}",
                config.default_entry()
            ),
            None => assert!(
                matches!(config.default_entry(), Err(GrubError::DefaultNotXen(_))),
                "{spec}"
            ),
        }
        assert_eq!(
            matches!(config.default_source(), DefaultSource::Fallback(_)),
            fell_back,
            "{spec}"
        );
    }
}

#[test]
fn a_double_greater_than_is_a_literal_in_a_default() {
    let text = b"load_env\nif [ \"${next_entry}\" ] ; then\n   set default=\"${next_entry}\"\nfi\nmenuentry 'A' {\n\tlinux /vmlinuz\n}\nmenuentry 'A>B' {\n\tmultiboot2 /xen\n\tmodule2 /vmlinuz ro\n}\n";
    let env = GrubEnv::parse(b"next_entry=A>>B\n");
    let config = GrubConfig::parse(text, &env).unwrap();
    assert_eq!(config.default_entry().unwrap().title, "A>B");
}

/// Debian's `20_linux_xen` puts `${xen_rm_opts}` after the Xen arguments;
/// with a ` -- ` in `GRUB_CMDLINE_XEN_DEFAULT` (fixture a3 of the upstream
/// differential runs) the variable lands among dom0's arguments. The
/// entry sets it only to literals (empty, or `no-real-mode edd=off`) that
/// do not touch the hide, so the hide list is known: read and edited.
#[test]
fn debian_xen_rm_opts_after_double_dash_is_read_and_edited() {
    let defaults = String::from_utf8(fixture(
        "turn3/a3-debian-grub-cmdline-xen-dashdash.default-grub",
    ))
    .unwrap();
    let xen_args = defaults
        .lines()
        .find_map(|l| l.strip_prefix("GRUB_CMDLINE_XEN_DEFAULT="))
        .unwrap()
        .trim_matches('"');
    assert!(xen_args.contains(" -- "));
    // What Debian 12's 20_linux_xen generates (the shape of
    // grub-real/debian12-grub-mkconfig.cfg) from these defaults.
    let cfg = format!(
        "set default=0\n\
         menuentry 'Debian GNU/Linux, with Xen hypervisor' {{\n\
         \tif [ \"$grub_platform\" = \"pc\" -o \"$grub_platform\" = \"\" ]; then\n\
         \t    xen_rm_opts=\n\
         \telse\n\
         \t    xen_rm_opts=\"no-real-mode edd=off\"\n\
         \tfi\n\
         \tmultiboot2\t/boot/xen-4.17-amd64.gz placeholder  {xen_args} ${{xen_rm_opts}}\n\
         \tmodule2\t/boot/vmlinuz-6.1.0-28-amd64 placeholder root=/dev/nvme0n1p2 ro  quiet{{}}\n\
         \tmodule2\t/boot/initrd.img-6.1.0-28-amd64\n\
         }}\n"
    );
    for (dom0_extra, hidden) in [
        ("", None),
        (" xen-pciback.hide=(0000:01:00.0)", Some("(0000:01:00.0)")),
    ] {
        let text = cfg.replace("{}", dom0_extra);
        let config = parse(text.as_bytes());
        assert_eq!(hidden_at_boot(&config).as_deref(), hidden, "{text}");
        // Xen's limit counts the longest value of the variable.
        let line = dom0(&config);
        assert!(
            line.ends_with(" console=hvc0 no-real-mode edd=off"),
            "{line}"
        );

        let out = config
            .edited(Target::Dom0, &hide_edit("(0000:03:00.0)"))
            .unwrap();
        let after = parse(&out);
        assert_eq!(hidden_at_boot(&after).as_deref(), Some("(0000:03:00.0)"));
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(" -- console=hvc0 ${xen_rm_opts}\n"), "{out}");
        let out = config.edited(Target::Dom0, &HIDE_DELETE).unwrap();
        assert_eq!(hidden_at_boot(&parse(&out)), None);
    }

    // A variable that may set the hide is still refused.
    let risky = cfg
        .replace("{}", "")
        .replace("edd=off", "xen_pciback.hide=(0000:02:00.0)");
    assert!(matches!(
        parse(risky.as_bytes()).boot_cmdline(),
        Err(GrubError::Unsupported { .. })
    ));
}

/// host-display's dom0 edits: `--set-dom0 "console=hvc0 console=tty0"`
/// puts both where the last console was, once; `--delete-dom0
/// console=tty0` removes that word only.
#[test]
fn dom0_console_words_are_set_and_removed_as_host_display_does() {
    let show = Edit::SetWords {
        key: "console",
        words: "console=hvc0 console=tty0",
    };
    let config = parse(&fixture("grub/xcpng-grub.cfg"));
    let shown = parse(&config.edited(Target::Dom0, &show).unwrap());
    assert!(
        dom0(&shown).contains(" console=hvc0 console=tty0 quiet "),
        "{}",
        dom0(&shown)
    );
    assert_eq!(dom0(&shown).matches("console=").count(), 2);
    // Again: the same text.
    assert_eq!(
        shown.edited(Target::Dom0, &show).unwrap(),
        config.edited(Target::Dom0, &show).unwrap()
    );
    let hide = Edit::Delete {
        key: "console=tty0",
        matching: Matching::Exact,
    };
    let hidden = parse(&shown.edited(Target::Dom0, &hide).unwrap());
    assert!(!dom0(&hidden).contains("console=tty0"), "{}", dom0(&hidden));
    assert!(
        dom0(&hidden).contains(" console=hvc0 quiet "),
        "{}",
        dom0(&hidden)
    );
    // Words of another key in the setting are refused, nothing edited.
    let mixed = Edit::SetWords {
        key: "console",
        words: "console=hvc0 quiet",
    };
    assert!(config.edited(Target::Dom0, &mixed).is_err());
}
