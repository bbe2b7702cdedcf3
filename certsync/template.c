/*
 * template.c - the strict template engine of template.h.
 *
 * Two passes: the template is parsed whole into a flat node array (so a syntax error anywhere, even in a
 * branch that would not be taken, is reported), then the tree is walked against the variables.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template.h"

#define TPL_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- variables ---- */

struct tscope *
tscope_new(void)
{
	return calloc(1, sizeof(struct tscope));
}

static void
tvar_clear(struct tvar *v)
{
	size_t i;

	free(v->str);
	v->str = NULL;
	v->str_len = 0;
	for (i = 0; i < v->nitems; i++)
		tscope_free(v->items[i]);
	free(v->items);
	v->items = NULL;
	v->nitems = 0;
}

void
tscope_free(struct tscope *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->nvars; i++) {
		tvar_clear(&s->vars[i]);
		free(s->vars[i].name);
	}
	free(s->vars);
	free(s);
}

/* The variable named name in s (not its parents), created empty when absent; NULL on allocation failure. */
static struct tvar *
tscope_slot(struct tscope *s, const char *name)
{
	struct tvar *nv;
	size_t i, ncap;

	if (s == NULL || s->oom)
		return NULL;
	for (i = 0; i < s->nvars; i++)
		if (strcmp(s->vars[i].name, name) == 0)
			return &s->vars[i];
	if (s->nvars == s->cap) {
		ncap = s->cap == 0 ? 16 : s->cap * 2;
		nv = realloc(s->vars, ncap * sizeof(*nv));
		if (nv == NULL) {
			s->oom = 1;
			return NULL;
		}
		s->vars = nv;
		s->cap = ncap;
	}
	nv = &s->vars[s->nvars];
	memset(nv, 0, sizeof(*nv));
	if ((nv->name = strdup(name)) == NULL) {
		s->oom = 1;
		return NULL;
	}
	s->nvars++;
	return nv;
}

void
tscope_set_strn(struct tscope *s, const char *name, const char *value, size_t len)
{
	struct tvar *v;
	char *copy;

	if ((v = tscope_slot(s, name)) == NULL)
		return;
	if ((copy = malloc(len + 1)) == NULL) {
		s->oom = 1;
		return;
	}
	if (len > 0)
		memcpy(copy, value, len);
	copy[len] = '\0';
	tvar_clear(v);
	v->type = TV_STRING;
	v->str = copy;
	v->str_len = len;
}

void
tscope_set_str(struct tscope *s, const char *name, const char *value)
{
	if (value == NULL) {
		/* A NULL value is a caller bug; make it visible as an error at render time, not an empty string. */
		if (s != NULL)
			s->oom = 1;
		return;
	}
	tscope_set_strn(s, name, value, strlen(value));
}

void
tscope_set_int(struct tscope *s, const char *name, long long value)
{
	char num[32];
	int n;

	n = snprintf(num, sizeof(num), "%lld", value);
	tscope_set_strn(s, name, num, (size_t)n);
}

void
tscope_set_bool(struct tscope *s, const char *name, bool value)
{
	struct tvar *v;

	if ((v = tscope_slot(s, name)) == NULL)
		return;
	tvar_clear(v);
	v->type = TV_BOOL;
	v->b = value;
}

void
tscope_set_list(struct tscope *s, const char *name)
{
	struct tvar *v;

	if ((v = tscope_slot(s, name)) == NULL)
		return;
	if (v->type != TV_LIST) {
		tvar_clear(v);
		v->type = TV_LIST;
	}
}

struct tscope *
tscope_list_add(struct tscope *s, const char *name)
{
	struct tscope **ni, *child;
	struct tvar *v;

	tscope_set_list(s, name);
	if ((v = tscope_slot(s, name)) == NULL)
		return NULL;
	if ((child = tscope_new()) == NULL) {
		s->oom = 1;
		return NULL;
	}
	ni = realloc(v->items, (v->nitems + 1) * sizeof(*ni));
	if (ni == NULL) {
		free(child);
		s->oom = 1;
		return NULL;
	}
	v->items = ni;
	v->items[v->nitems++] = child;
	return child;
}

static const struct tvar *
tscope_get(const struct tscope *s, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < s->nvars; i++)
		if (strlen(s->vars[i].name) == len && memcmp(s->vars[i].name, name, len) == 0)
			return &s->vars[i];
	return NULL;
}

static int
tscope_oom(const struct tscope *s)
{
	size_t i, j;

	if (s->oom)
		return 1;
	for (i = 0; i < s->nvars; i++)
		for (j = 0; j < s->vars[i].nitems; j++)
			if (tscope_oom(s->vars[i].items[j]))
				return 1;
	return 0;
}

/* ---- parsing ---- */

enum nkind {
	N_TEXT,
	N_VAR,
	N_EACH,
	N_IF,
	N_UNLESS,
};

#define NONE	SIZE_MAX

struct tnode {
	enum nkind	 kind;
	const char	*s;		/* text, or the variable path */
	size_t		 len;
	const char	*alias;		/* N_EACH */
	size_t		 alias_len;
	unsigned	 line, col;
	size_t		 body;		/* first child, NONE when empty */
	size_t		 alt;		/* first child of the else part */
	size_t		 next;		/* next sibling */
};

enum tagkind {
	T_VAR,
	T_EACH,
	T_IF,
	T_UNLESS,
	T_ELSE,
	T_END_EACH,
	T_END_IF,
	T_END_UNLESS,
	T_COMMENT,
};

struct tag {
	enum tagkind	 kind;
	const char	*path;
	size_t		 path_len;
	const char	*alias;
	size_t		 alias_len;
	size_t		 start;		/* offset of "{{" */
	size_t		 end;		/* offset just past "}}" */
};

struct parser {
	const char	*name;
	const char	*t;
	size_t		 len;
	size_t		 off;
	struct tnode	*nodes;
	size_t		 nnodes, cap;
	char		*err;
	size_t		 errlen;
	int		 failed;
	unsigned	 depth;
};

#define MAX_DEPTH	32

/* Line and column (1-based) of offset off in t. */
static void
linecol(const char *t, size_t off, unsigned *line, unsigned *col)
{
	size_t i;

	*line = 1;
	*col = 1;
	for (i = 0; i < off; i++) {
		if (t[i] == '\n') {
			(*line)++;
			*col = 1;
		} else
			(*col)++;
	}
}

static void perr_at(struct parser *p, size_t off, const char *fmt, ...) TPL_PRINTF(3, 4);

static void
perr_at(struct parser *p, size_t off, const char *fmt, ...)
{
	char what[256];
	unsigned line, col;
	va_list ap;

	if (p->failed)
		return;
	p->failed = 1;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	linecol(p->t, off, &line, &col);
	snprintf(p->err, p->errlen, "%s:%u:%u: %s", p->name, line, col, what);
}

static size_t
node_new(struct parser *p, enum nkind kind, const char *s, size_t len, size_t off)
{
	struct tnode *nn, *n;
	size_t ncap;

	if (p->nnodes == p->cap) {
		ncap = p->cap == 0 ? 64 : p->cap * 2;
		if ((nn = realloc(p->nodes, ncap * sizeof(*nn))) == NULL) {
			perr_at(p, off, "out of memory");
			return NONE;
		}
		p->nodes = nn;
		p->cap = ncap;
	}
	n = &p->nodes[p->nnodes];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->s = s;
	n->len = len;
	n->body = n->alt = n->next = NONE;
	linecol(p->t, off, &n->line, &n->col);
	return p->nnodes++;
}

static int
is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int
is_ident(char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Reads an identifier at *i (bounded by end); its length, 0 when there is none. */
static size_t
read_ident(const char *t, size_t *i, size_t end)
{
	size_t s = *i;

	if (*i >= end || !is_ident_start(t[*i]))
		return 0;
	while (*i < end && is_ident(t[*i]))
		(*i)++;
	return *i - s;
}

/* A path: ident or ident.ident. Length, or 0 with an error. */
static size_t
read_path(struct parser *p, size_t *i, size_t end)
{
	size_t s = *i;

	if (read_ident(p->t, i, end) == 0) {
		perr_at(p, *i, "expected a variable name");
		return 0;
	}
	if (*i < end && p->t[*i] == '.') {
		(*i)++;
		if (read_ident(p->t, i, end) == 0) {
			perr_at(p, *i, "expected a field name after '.'");
			return 0;
		}
	}
	return *i - s;
}

static void
skip_blanks(const char *t, size_t *i, size_t end)
{
	while (*i < end && is_blank(t[*i]))
		(*i)++;
}

static int
word_is(const char *t, size_t i, size_t end, const char *w)
{
	size_t n = strlen(w);

	return end - i >= n && memcmp(t + i, w, n) == 0 && (end - i == n || !is_ident(t[i + n]));
}

/*
 * Parses the tag starting at p->t[start] == "{{". Tags other than comments end on their line.
 * 0, or -1 with the parser's error set.
 */
static int
read_tag(struct parser *p, size_t start, struct tag *tag)
{
	const char *t = p->t;
	size_t i, close, end;
	int comment;

	memset(tag, 0, sizeof(*tag));
	tag->start = start;
	i = start + 2;
	skip_blanks(t, &i, p->len);
	comment = i < p->len && t[i] == '!';
	/* Find "}}": for a comment anywhere, otherwise before the end of the line. */
	for (close = i; close + 1 < p->len; close++) {
		if (t[close] == '}' && t[close + 1] == '}')
			break;
		if (t[close] == '\n' && !comment)
			break;
	}
	if (close + 1 >= p->len || t[close] != '}' || t[close + 1] != '}') {
		perr_at(p, start, "unterminated tag");
		return -1;
	}
	end = close;
	tag->end = close + 2;
	if (comment) {
		tag->kind = T_COMMENT;
		return 0;
	}
	if (i < end && t[i] == '#') {
		i++;
		if (word_is(t, i, end, "each")) {
			tag->kind = T_EACH;
			i += 4;
		} else if (word_is(t, i, end, "if")) {
			tag->kind = T_IF;
			i += 2;
		} else if (word_is(t, i, end, "unless")) {
			tag->kind = T_UNLESS;
			i += 6;
		} else {
			perr_at(p, i, "unknown block '#%.*s'", (int)(end - i > 20 ? 20 : end - i), t + i);
			return -1;
		}
		if (i >= end || !is_blank(t[i])) {
			perr_at(p, i, "expected a variable name");
			return -1;
		}
		skip_blanks(t, &i, end);
		tag->path = t + i;
		if ((tag->path_len = read_path(p, &i, end)) == 0)
			return -1;
		if (tag->kind == T_EACH) {
			skip_blanks(t, &i, end);
			if (!word_is(t, i, end, "as")) {
				perr_at(p, i, "expected 'as <name>' in #each");
				return -1;
			}
			i += 2;
			skip_blanks(t, &i, end);
			tag->alias = t + i;
			if ((tag->alias_len = read_ident(t, &i, end)) == 0) {
				perr_at(p, i, "expected a name after 'as'");
				return -1;
			}
		}
	} else if (i < end && t[i] == '/') {
		i++;
		if (word_is(t, i, end, "each")) {
			tag->kind = T_END_EACH;
			i += 4;
		} else if (word_is(t, i, end, "if")) {
			tag->kind = T_END_IF;
			i += 2;
		} else if (word_is(t, i, end, "unless")) {
			tag->kind = T_END_UNLESS;
			i += 6;
		} else {
			perr_at(p, i, "unknown closing tag '/%.*s'", (int)(end - i > 20 ? 20 : end - i), t + i);
			return -1;
		}
	} else if (word_is(t, i, end, "else")) {
		tag->kind = T_ELSE;
		i += 4;
	} else {
		tag->kind = T_VAR;
		tag->path = t + i;
		if ((tag->path_len = read_path(p, &i, end)) == 0)
			return -1;
	}
	skip_blanks(t, &i, end);
	if (i != end) {
		perr_at(p, i, "unexpected '%c' in tag", t[i]);
		return -1;
	}
	return 0;
}

static const char *
tag_name(enum tagkind k)
{
	switch (k) {
	case T_EACH:
	case T_END_EACH:
		return "each";
	case T_IF:
	case T_END_IF:
		return "if";
	case T_UNLESS:
	case T_END_UNLESS:
		return "unless";
	default:
		return "?";
	}
}

/* Appends node n to the list whose head is *head and tail *tail. */
static void
link_node(struct parser *p, size_t *head, size_t *tail, size_t n)
{
	if (*head == NONE)
		*head = n;
	else
		p->nodes[*tail].next = n;
	*tail = n;
}

/*
 * Parses a sequence of nodes until a closing tag (returned in *stop) or the end of the template
 * (*stop = NULL-like: stop->kind unchanged and found = 0). Returns the head node index.
 */
static size_t
parse_seq(struct parser *p, struct tag *stop, int *found)
{
	size_t head = NONE, tail = NONE, n, tstart, text_end, ls, after;
	const char *t = p->t;
	struct tag tag;

	*found = 0;
	while (!p->failed && p->off < p->len) {
		const char *o = NULL;
		size_t k;

		for (k = p->off; k + 1 < p->len; k++)
			if (t[k] == '{' && t[k + 1] == '{') {
				o = t + k;
				break;
			}
		if (o == NULL) {
			n = node_new(p, N_TEXT, t + p->off, p->len - p->off, p->off);
			if (n != NONE)
				link_node(p, &head, &tail, n);
			p->off = p->len;
			break;
		}
		tstart = (size_t)(o - t);
		if (read_tag(p, tstart, &tag) == -1)
			break;
		/* Standalone block tag or comment: drop its whole line. */
		text_end = tstart;
		after = tag.end;
		if (tag.kind != T_VAR) {
			ls = tstart;
			while (ls > 0 && is_blank(t[ls - 1]))
				ls--;
			if (ls == 0 || t[ls - 1] == '\n') {
				size_t r = tag.end;

				while (r < p->len && is_blank(t[r]))
					r++;
				if (r == p->len || t[r] == '\n') {
					text_end = ls;
					after = r < p->len ? r + 1 : r;
				}
			}
		}
		if (text_end > p->off) {
			n = node_new(p, N_TEXT, t + p->off, text_end - p->off, p->off);
			if (n == NONE)
				break;
			link_node(p, &head, &tail, n);
		}
		p->off = after;
		switch (tag.kind) {
		case T_COMMENT:
			break;
		case T_VAR:
			n = node_new(p, N_VAR, tag.path, tag.path_len, tstart);
			if (n != NONE)
				link_node(p, &head, &tail, n);
			break;
		case T_EACH:
		case T_IF:
		case T_UNLESS: {
			struct tag end;
			size_t body, alt = NONE;
			int f;
			enum tagkind want = tag.kind == T_EACH ? T_END_EACH :
			    tag.kind == T_IF ? T_END_IF : T_END_UNLESS;

			if (++p->depth > MAX_DEPTH) {
				perr_at(p, tstart, "blocks nested deeper than %d", MAX_DEPTH);
				break;
			}
			n = node_new(p, tag.kind == T_EACH ? N_EACH : tag.kind == T_IF ? N_IF : N_UNLESS,
			    tag.path, tag.path_len, tstart);
			if (n == NONE)
				break;
			p->nodes[n].alias = tag.alias;
			p->nodes[n].alias_len = tag.alias_len;
			body = parse_seq(p, &end, &f);
			if (p->failed)
				break;
			if (f && end.kind == T_ELSE) {
				if (tag.kind == T_EACH) {
					perr_at(p, end.start, "{{else}} is not allowed in #each");
					break;
				}
				alt = parse_seq(p, &end, &f);
				if (p->failed)
					break;
				if (f && end.kind == T_ELSE) {
					perr_at(p, end.start, "second {{else}} in #%s", tag_name(tag.kind));
					break;
				}
			}
			if (!f) {
				perr_at(p, tstart, "unterminated #%s block", tag_name(tag.kind));
				break;
			}
			if (end.kind != want) {
				perr_at(p, end.start, "mismatched block: {{/%s}} closes #%s", tag_name(end.kind),
				    tag_name(tag.kind));
				break;
			}
			p->nodes[n].body = body;
			p->nodes[n].alt = alt;
			link_node(p, &head, &tail, n);
			p->depth--;
			break;
		}
		case T_ELSE:
		case T_END_EACH:
		case T_END_IF:
		case T_END_UNLESS:
			if (p->depth == 0) {
				if (tag.kind == T_ELSE)
					perr_at(p, tstart, "{{else}} outside a block");
				else
					perr_at(p, tstart, "mismatched block: {{/%s}} without an opening tag",
					    tag_name(tag.kind));
				break;
			}
			*stop = tag;
			*found = 1;
			return head;
		}
	}
	return head;
}

/* ---- rendering ---- */

struct frame {
	const struct tscope	*scope;
	const char		*alias;		/* NULL for the root */
	size_t			 alias_len;
};

struct renderer {
	const char		*name;
	const struct tnode	*nodes;
	struct frame		 frames[MAX_DEPTH + 1];
	size_t			 nframes;
	char			*out;
	size_t			 len, cap, max;
	char			*err;
	size_t			 errlen;
	int			 failed;
	unsigned long		 steps;		/* nodes visited: nested #each over empty bodies emit nothing */
};

/* Bounds the work of one render: nested #each blocks multiply, even when they emit nothing. */
#define MAX_STEPS	(1UL << 22)

static void rerr(struct renderer *r, const struct tnode *n, const char *fmt, ...) TPL_PRINTF(3, 4);

static void
rerr(struct renderer *r, const struct tnode *n, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	if (r->failed)
		return;
	r->failed = 1;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(r->err, r->errlen, "%s:%u:%u: %s", r->name, n->line, n->col, what);
}

static void
emit(struct renderer *r, const struct tnode *n, const char *s, size_t len)
{
	size_t ncap;
	char *nb;

	if (r->failed)
		return;
	if (r->max - r->len <= len) {
		rerr(r, n, "output too large (more than %zu bytes)", r->max);
		return;
	}
	if (r->cap - r->len <= len) {
		ncap = r->cap == 0 ? 4096 : r->cap;
		while (ncap - r->len <= len)
			ncap *= 2;
		if ((nb = realloc(r->out, ncap)) == NULL) {
			rerr(r, n, "out of memory");
			return;
		}
		r->out = nb;
		r->cap = ncap;
	}
	memcpy(r->out + r->len, s, len);
	r->len += len;
	r->out[r->len] = '\0';
}

/* Resolves the path of node n. NULL with an error when unknown. */
static const struct tvar *
lookup(struct renderer *r, const struct tnode *n)
{
	const char *dot = memchr(n->s, '.', n->len);
	const struct tvar *v;
	size_t i;

	if (dot != NULL) {
		size_t alen = (size_t)(dot - n->s);

		for (i = r->nframes; i-- > 1;) {
			if (r->frames[i].alias_len == alen && memcmp(r->frames[i].alias, n->s, alen) == 0) {
				v = tscope_get(r->frames[i].scope, dot + 1, n->len - alen - 1);
				if (v == NULL)
					rerr(r, n, "unknown variable '%.*s'", (int)n->len, n->s);
				return v;
			}
		}
		rerr(r, n, "unknown variable '%.*s' ('%.*s' is not an #each name here)", (int)n->len, n->s,
		    (int)alen, n->s);
		return NULL;
	}
	v = tscope_get(r->frames[0].scope, n->s, n->len);
	if (v == NULL) {
		for (i = 1; i < r->nframes; i++)
			if (r->frames[i].alias_len == n->len && memcmp(r->frames[i].alias, n->s, n->len) == 0) {
				rerr(r, n, "'%.*s' is a list item, not a string: use '%.*s.<field>'",
				    (int)n->len, n->s, (int)n->len, n->s);
				return NULL;
			}
		rerr(r, n, "unknown variable '%.*s'", (int)n->len, n->s);
	}
	return v;
}

static void render_seq(struct renderer *r, size_t i);

static void
render_node(struct renderer *r, const struct tnode *n)
{
	const struct tvar *v;
	size_t k;
	bool cond;

	if (++r->steps > MAX_STEPS) {
		rerr(r, n, "template too complex (more than %lu steps)", MAX_STEPS);
		return;
	}
	switch (n->kind) {
	case N_TEXT:
		emit(r, n, n->s, n->len);
		return;
	case N_VAR:
		if ((v = lookup(r, n)) == NULL)
			return;
		if (v->type == TV_LIST) {
			rerr(r, n, "'%.*s' is a list, used as a string", (int)n->len, n->s);
			return;
		}
		if (v->type == TV_BOOL) {
			rerr(r, n, "'%.*s' is a flag, used as a string", (int)n->len, n->s);
			return;
		}
		for (k = 0; k < v->str_len; k++) {
			if (v->str[k] == '\n' || v->str[k] == '\r' || v->str[k] == '\0') {
				rerr(r, n, "value of '%.*s' contains a %s: refused", (int)n->len, n->s,
				    v->str[k] == '\n' ? "newline" : v->str[k] == '\r' ? "carriage return" : "NUL");
				return;
			}
		}
		emit(r, n, v->str, v->str_len);
		return;
	case N_IF:
	case N_UNLESS:
		if ((v = lookup(r, n)) == NULL)
			return;
		if (v->type == TV_STRING) {
			rerr(r, n, "'%.*s' is a string, used as a flag", (int)n->len, n->s);
			return;
		}
		cond = v->type == TV_BOOL ? v->b : v->nitems > 0;
		if (n->kind == N_UNLESS)
			cond = !cond;
		render_seq(r, cond ? n->body : n->alt);
		return;
	case N_EACH:
		if ((v = lookup(r, n)) == NULL)
			return;
		if (v->type != TV_LIST) {
			rerr(r, n, "'%.*s' is not a list", (int)n->len, n->s);
			return;
		}
		if (r->nframes >= MAX_DEPTH + 1) {
			rerr(r, n, "#each nested too deep");
			return;
		}
		for (k = 0; k < v->nitems && !r->failed; k++) {
			r->frames[r->nframes].scope = v->items[k];
			r->frames[r->nframes].alias = n->alias;
			r->frames[r->nframes].alias_len = n->alias_len;
			r->nframes++;
			render_seq(r, n->body);
			r->nframes--;
		}
		return;
	}
}

static void
render_seq(struct renderer *r, size_t i)
{
	while (i != NONE && !r->failed) {
		render_node(r, &r->nodes[i]);
		i = r->nodes[i].next;
	}
}

/*
 * Before rendering, every name of the whole tree is resolved against the top-level scope and the
 * enclosing #each names, so a typo in a branch or loop that this render does not take is still an
 * error. (Fields of an item can only be checked when the list has items.)
 */
static void
check_names(struct renderer *r, size_t i)
{
	const struct tnode *n;
	const char *dot;
	size_t k, alen;
	int found;

	for (; i != NONE && !r->failed; i = r->nodes[i].next) {
		n = &r->nodes[i];
		if (n->kind == N_TEXT)
			continue;
		dot = memchr(n->s, '.', n->len);
		if (dot == NULL) {
			if (tscope_get(r->frames[0].scope, n->s, n->len) == NULL)
				(void)lookup(r, n);	/* sets the precise error */
		} else {
			alen = (size_t)(dot - n->s);
			found = 0;
			for (k = 1; k < r->nframes; k++)
				if (r->frames[k].alias_len == alen && memcmp(r->frames[k].alias, n->s, alen) == 0)
					found = 1;
			if (!found)
				(void)lookup(r, n);
		}
		if (r->failed)
			return;
		if (n->kind == N_EACH) {
			/* A scope-less frame: only its name matters here. */
			r->frames[r->nframes].scope = NULL;
			r->frames[r->nframes].alias = n->alias;
			r->frames[r->nframes].alias_len = n->alias_len;
			r->nframes++;
			check_names(r, n->body);
			r->nframes--;
		} else if (n->kind == N_IF || n->kind == N_UNLESS) {
			check_names(r, n->body);
			check_names(r, n->alt);
		}
	}
}

int
template_render(const char *name, const char *tmpl, size_t tmpl_len, const struct tscope *root,
    size_t max_out, char **out, size_t *out_len, char *err, size_t errlen)
{
	struct parser p;
	struct renderer r;
	struct tag stop;
	const char *nul;
	size_t head;
	int found;

	*out = NULL;
	*out_len = 0;
	if (root == NULL || tscope_oom(root)) {
		snprintf(err, errlen, "%s: variables incomplete (allocation failed or a NULL value)", name);
		return -1;
	}
	memset(&p, 0, sizeof(p));
	p.name = name;
	p.t = tmpl;
	p.len = tmpl_len;
	p.err = err;
	p.errlen = errlen;
	if ((nul = memchr(tmpl, '\0', tmpl_len)) != NULL) {
		perr_at(&p, (size_t)(nul - tmpl), "NUL byte in template");
		return -1;
	}
	head = parse_seq(&p, &stop, &found);
	if (p.failed) {
		free(p.nodes);
		return -1;
	}

	memset(&r, 0, sizeof(r));
	r.name = name;
	r.nodes = p.nodes;
	r.frames[0].scope = root;
	r.nframes = 1;
	r.max = max_out;
	r.err = err;
	r.errlen = errlen;
	/* An empty output is still a valid, NUL-terminated string. */
	if ((r.out = malloc(1)) == NULL) {
		free(p.nodes);
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	r.out[0] = '\0';
	r.cap = 1;
	check_names(&r, head);
	if (!r.failed)
		render_seq(&r, head);
	free(p.nodes);
	if (r.failed) {
		free(r.out);
		return -1;
	}
	*out = r.out;
	*out_len = r.len;
	return 0;
}
