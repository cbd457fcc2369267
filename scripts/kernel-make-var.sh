#!/bin/sh
# Prints the value of a simple (":=") variable of a kernel Makefile, joining
# continuation lines. Kbuild uses it to take bindgen_skip_c_flags from the
# KDIR's own rust/Makefile instead of keeping a copy that could drift.
#   kernel-make-var.sh <Makefile> <variable>
awk -v var="$2" '
	$0 ~ "^" var "[ \t]*:=" { on = 1; sub("^" var "[ \t]*:=", "") }
	on { line = $0; cont = sub(/\\[ \t]*$/, "", line); printf "%s ", line; if (!cont) exit }
' "$1"
