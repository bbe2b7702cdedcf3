/*
 * template.h - a small, strict template engine for the HAProxy configuration files.
 *
 * Syntax (haproxy-templates/README.md has the reference):
 *   {{ name }}  {{ item.field }}                 substitution of a string value
 *   {{#each list as item}} ... {{/each}}         repeat for each child scope of a list
 *   {{#if flag}} ... {{else}} ... {{/if}}        a boolean (or a list: true when not empty)
 *   {{#unless flag}} ... {{else}} ... {{/unless}}
 *   {{! comment }}                               produces nothing
 * A tag standing alone on its line (only blanks around it) is a "standalone" block tag or comment: the
 * whole line, newline included, is dropped, so block structure does not leave blank lines behind.
 *
 * Strict: an unknown variable, an unterminated tag, a mismatched block, a list used as a string (or a string
 * as a list or flag), or output beyond the cap is an error "<template>:<line>:<col>: <what>". A substituted
 * value containing a newline, carriage return or NUL is refused: it could inject HAProxy configuration.
 * Pure: no I/O, no globals.
 */
#ifndef HC_TEMPLATE_H
#define HC_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

enum tvar_type {
	TV_STRING,
	TV_BOOL,
	TV_LIST,
};

struct tscope;

/* One named value of a scope. */
struct tvar {
	char		*name;
	enum tvar_type	 type;
	char		*str;		/* TV_STRING (may contain anything: checked when substituted) */
	size_t		 str_len;
	bool		 b;		/* TV_BOOL */
	struct tscope	**items;	/* TV_LIST: child scopes */
	size_t		 nitems;
};

/* A set of variables. Lookups of a name not found here go to the parent (the enclosing scope). */
struct tscope {
	struct tvar	*vars;
	size_t		 nvars;
	size_t		 cap;
	int		 oom;		/* sticky: a failed allocation; template_render then fails */
};

struct tscope *tscope_new(void);
void tscope_free(struct tscope *s);
/* Setters copy their arguments; setting a name again replaces the value. Failures are sticky in s->oom. */
void tscope_set_str(struct tscope *s, const char *name, const char *value);
void tscope_set_strn(struct tscope *s, const char *name, const char *value, size_t len);
void tscope_set_int(struct tscope *s, const char *name, long long value);
void tscope_set_bool(struct tscope *s, const char *name, bool value);
/* Creates (or returns) the list named name. */
void tscope_set_list(struct tscope *s, const char *name);
/* Appends a new child scope to the list named name (created if needed); NULL on allocation failure. */
struct tscope *tscope_list_add(struct tscope *s, const char *name);

/*
 * Renders tmpl (tmpl_len bytes, NUL bytes refused) with the variables of root into a malloc'd,
 * NUL-terminated *out of at most max_out bytes. name is used in error messages.
 * 0, or -1 with err "<name>:<line>:<col>: <what>" (*out is NULL then).
 */
int template_render(const char *name, const char *tmpl, size_t tmpl_len, const struct tscope *root,
    size_t max_out, char **out, size_t *out_len, char *err, size_t errlen);

#endif
