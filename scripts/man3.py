#!/usr/bin/env python3
"""Man pages mm_*(3) from the doc comments of include/micromsg.h.

  man3.py --list HEADER          the function names, one per line
  man3.py --check HEADER         fails when a public function has no doc comment
  man3.py HEADER OUTDIR VERSION  writes OUTDIR/<function>.3 for every function

A public function is a declaration starting with MM_EXPORT; its documentation
is the /** ... */ comment right before it. "@param" and "@return" lines become
the ARGUMENTS and RETURN VALUE sections; the header's section banners
("/* ---- Sending ---- */") group the SEE ALSO lists.
"""
import re
import sys

DECL = re.compile(r"MM_EXPORT\s+([^;]*?\b(mm_\w+)\s*\([^;]*\))\s*;", re.S)
BANNER = re.compile(r"/\* ---- ([^-*]+?) -+")


def functions(text):
    """(name, prototype, doc or None, section) for every MM_EXPORT function."""
    out, section = [], ""
    banners = [(m.start(), m.group(1).strip()) for m in BANNER.finditer(text)]
    for m in DECL.finditer(text):
        section = next((t for pos, t in reversed(banners) if pos < m.start()), "")
        before = text[: m.start()].rstrip()
        doc = None
        if before.endswith("*/"):
            start = before.rfind("/**")
            if start >= 0 and "*/" not in before[start:-2]:
                doc = before[start + 3 : -2]
        proto = " ".join(m.group(1).split())
        out.append((m.group(2), proto, doc, section))
    return out


def clean(doc):
    lines = [re.sub(r"^\s*\* ?", "", l) for l in doc.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def roff(s):
    s = s.replace("\\", "\\e")
    return "\n".join(("\\&" + l) if l[:1] in ".'" else l for l in s.split("\n"))


def split_doc(doc):
    """Description paragraphs, @param lines, @return text."""
    desc, params, ret, cur = [], [], [], None
    for line in clean(doc).split("\n"):
        if line.startswith("@param"):
            params.append(line[len("@param") :].strip())
            cur = params
        elif line.startswith("@return"):
            ret.append(line[len("@return") :].strip())
            cur = ret
        elif cur is not None and line.strip():
            cur[-1] += " " + line.strip()
        else:
            cur = None if not line.strip() else cur
            desc.append(line)
    return "\n".join(desc).strip(), params, " ".join(ret)


def page(name, proto, doc, section, others, version):
    desc, params, ret = split_doc(doc)
    first = re.split(r"(?<=[.:])\s", desc.replace("\n", " "), maxsplit=1)[0].rstrip(".:")
    out = [f'.TH {name.upper()} 3 "" "micromsg {version}" "micromsg manual"',
           ".SH NAME", f"{name} \\- {roff(first)}",
           ".SH SYNOPSIS", ".nf", ".B #include <micromsg.h>", ".PP", roff(proto + ";"), ".fi",
           ".SH DESCRIPTION"]
    for para in re.split(r"\n\s*\n", desc):
        out += [roff(" ".join(para.split())), ".PP"]
    if params:
        out.append(".SH ARGUMENTS")
        for p in params:
            word, _, rest = p.partition(" ")
            out += [".TP", f".I {word}", roff(rest)]
    if ret:
        out += [".SH RETURN VALUE", roff(ret)]
    out += [".SH SEE ALSO", ", ".join(f"\\fB{o}\\fR(3)" for o in others) + (
        "," if others else "") + f" the section \"{roff(section)}\" of micromsg.h"]
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) == 3 and argv[1] in ("--list", "--check"):
        fns = functions(open(argv[2], encoding="utf-8").read())
        if argv[1] == "--list":
            print("\n".join(n for n, _, _, _ in fns))
            return 0
        missing = [n for n, _, d, _ in fns if not d or not clean(d)]
        for n in missing:
            print(f"{argv[2]}: {n} has no doc comment", file=sys.stderr)
        print(f"{len(fns)} public functions, {len(fns) - len(missing)} documented")
        return 1 if missing or not fns else 0
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 64
    fns = functions(open(argv[1], encoding="utf-8").read())
    for name, proto, doc, section in fns:
        others = [n for n, _, _, s in fns if s == section and n != name][:12]
        with open(f"{argv[2]}/{name}.3", "w", encoding="utf-8") as f:
            f.write(page(name, proto, doc or "", section, others, argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
