/*
 * Fuzz target: certsync/template.c. The input up to the first NUL is the template; what follows is the
 * value of the variable "name" (so values with line breaks and NULs reach the injection check).
 * Invariants: no crash, leak or runaway loop; a successful output is NUL-terminated at out_len, holds no
 * NUL, has no line break unless the template text has one, and respects the cap.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP 65536

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *t = (const char *)data, *nul;
	struct tscope *s, *u;
	size_t tlen, out_len, i, tmpl_nl = 0, out_nl = 0;
	char err[256], *out;

	nul = memchr(t, '\0', size);
	tlen = nul != NULL ? (size_t)(nul - t) : size;
	if ((s = tscope_new()) == NULL)
		return 0;
	tscope_set_strn(s, "name", nul != NULL ? nul + 1 : "", nul != NULL ? size - tlen - 1 : 0);
	tscope_set_str(s, "port", "21000");
	tscope_set_bool(s, "http", true);
	tscope_set_bool(s, "off", false);
	tscope_set_list(s, "empty");
	for (i = 0; i < 3; i++) {
		u = tscope_list_add(s, "ups");
		tscope_set_int(u, "port", 9000 + (long long)i);
		tscope_set_str(u, "dest", "db");
		tscope_list_add(u, "inner");
	}
	if (template_render("fuzz", t, tlen, s, CAP, &out, &out_len, err, sizeof(err)) == 0) {
		if (out == NULL || out_len >= CAP || strlen(out) != out_len)
			abort();
		/* Without a line break in the template, values cannot add one. */
		for (i = 0; i < tlen; i++)
			tmpl_nl += t[i] == '\n' || t[i] == '\r';
		for (i = 0; i < out_len; i++)
			out_nl += out[i] == '\n' || out[i] == '\r';
		if (tmpl_nl == 0 && out_nl != 0)
			abort();
		free(out);
	} else if (out != NULL)
		abort();
	tscope_free(s);
	return 0;
}
