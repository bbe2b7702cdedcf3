/* Unit tests of certsync/template.c: every construct, every error with its line:col, injection refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "template.h"

static char err[512];

/* Renders t with root; returns the output (caller frees) or NULL with err set. */
static char *
render(const char *t, const struct tscope *root)
{
	char *out;
	size_t len;

	err[0] = '\0';
	if (template_render("t.tmpl", t, strlen(t), root, 1 << 20, &out, &len, err, sizeof(err)) == -1) {
		assert_null(out);
		return NULL;
	}
	assert_int_equal(len, strlen(out));
	return out;
}

static void
expect(const char *t, const struct tscope *root, const char *want)
{
	char *out = render(t, root);

	if (out == NULL)
		fail_msg("render failed: %s", err);
	assert_string_equal(out, want);
	free(out);
}

static void
expect_err(const char *t, const struct tscope *root, const char *want_err)
{
	char *out = render(t, root);

	if (out != NULL)
		fail_msg("render succeeded: %s", out);
	assert_string_equal(err, want_err);
}

static struct tscope *
sample(void)
{
	struct tscope *s = tscope_new(), *u;

	tscope_set_str(s, "name", "web");
	tscope_set_int(s, "port", 21000);
	tscope_set_bool(s, "http", true);
	tscope_set_bool(s, "off", false);
	tscope_set_list(s, "empty");
	u = tscope_list_add(s, "ups");
	tscope_set_str(u, "dest", "db");
	tscope_set_int(u, "port", 9191);
	u = tscope_list_add(s, "ups");
	tscope_set_str(u, "dest", "redis");
	tscope_set_int(u, "port", 9192);
	return s;
}

static void
test_substitution(void **state)
{
	struct tscope *s = sample();

	expect("plain text\n", s, "plain text\n");
	expect("", s, "");
	expect("bind {{name}}:{{ port }}\n", s, "bind web:21000\n");
	expect("{{  name\t}}", s, "web");
	expect("a { b } }} c", s, "a { b } }} c");
	tscope_set_str(s, "name", "api");
	expect("{{name}}", s, "api");
	tscope_set_str(s, "blank", "");
	expect("[{{blank}}]", s, "[]");
	tscope_free(s);
}

static void
test_each(void **state)
{
	struct tscope *s = sample();

	expect("{{#each ups as u}}{{u.dest}}={{u.port}} from {{name}};{{/each}}", s,
	    "db=9191 from web;redis=9192 from web;");
	/* Standalone block lines vanish, indentation of content lines is kept. */
	expect("start\n  {{#each ups as u}}\n  server {{u.dest}}\n  {{/each}}\nend\n", s,
	    "start\n  server db\n  server redis\nend\n");
	expect("x{{#each empty as e}}never {{e.nothing}}{{/each}}y", s, "xy");
	/* Nested each over a list of an item. */
	{
		struct tscope *u = tscope_list_add(s, "nest"), *v;

		v = tscope_list_add(u, "inner");
		tscope_set_str(v, "v", "1");
		v = tscope_list_add(u, "inner");
		tscope_set_str(v, "v", "2");
		expect("{{#each nest as n}}{{#each n.inner as i}}<{{i.v}}>{{/each}}{{/each}}", s, "<1><2>");
	}
	tscope_free(s);
}

static void
test_if_unless(void **state)
{
	struct tscope *s = sample();

	expect("{{#if http}}H{{/if}}", s, "H");
	expect("{{#if off}}H{{/if}}", s, "");
	expect("{{#if off}}A{{else}}B{{/if}}", s, "B");
	expect("{{#if http}}A{{else}}B{{/if}}", s, "A");
	expect("{{#unless off}}U{{/unless}}", s, "U");
	expect("{{#unless http}}U{{else}}E{{/unless}}", s, "E");
	expect("{{#if ups}}has{{/if}}{{#if empty}}none{{/if}}", s, "has");
	expect("mode {{#if http}}http{{else}}tcp{{/if}}\n", s, "mode http\n");
	expect("a\n{{#if http}}\nin\n{{else}}\nout\n{{/if}}\nb\n", s, "a\nin\nb\n");
	expect("{{#each ups as u}}{{#if http}}{{u.dest}} {{/if}}{{/each}}", s, "db redis ");
	tscope_free(s);
}

static void
test_comment(void **state)
{
	struct tscope *s = sample();

	expect("a{{! a comment with {{ braces }}b", s, "ab");
	expect("a\n{{! a comment\n  on two lines }}\nb\n", s, "a\nb\n");
	expect("  {{! standalone }}  \nx", s, "x");
	tscope_free(s);
}

static void
test_errors(void **state)
{
	struct tscope *s = sample();

	expect_err("ok\n  {{ nope }}", s, "t.tmpl:2:3: unknown variable 'nope'");
	expect_err("{{#each ups as u}}{{u.nope}}{{/each}}", s, "t.tmpl:1:19: unknown variable 'u.nope'");
	expect_err("{{x.name}}", s, "t.tmpl:1:1: unknown variable 'x.name' ('x' is not an #each name here)");
	expect_err("{{#each ups as u}}{{u}}{{/each}}", s,
	    "t.tmpl:1:19: 'u' is a list item, not a string: use 'u.<field>'");
	expect_err("a\nb {{name", s, "t.tmpl:2:3: unterminated tag");
	expect_err("{{name\n}}", s, "t.tmpl:1:1: unterminated tag");
	expect_err("{{! never closed", s, "t.tmpl:1:1: unterminated tag");
	expect_err("x\n{{#if http}}\n", s, "t.tmpl:2:1: unterminated #if block");
	expect_err("{{#if http}}{{/each}}", s, "t.tmpl:1:13: mismatched block: {{/each}} closes #if");
	expect_err("{{#each ups as u}}{{/unless}}", s, "t.tmpl:1:19: mismatched block: {{/unless}} closes #each");
	expect_err("x{{/if}}", s, "t.tmpl:1:2: mismatched block: {{/if}} without an opening tag");
	expect_err("{{else}}", s, "t.tmpl:1:1: {{else}} outside a block");
	expect_err("{{#if http}}a{{else}}b{{else}}c{{/if}}", s, "t.tmpl:1:23: second {{else}} in #if");
	expect_err("{{#each ups as u}}a{{else}}b{{/each}}", s, "t.tmpl:1:20: {{else}} is not allowed in #each");
	expect_err("{{ups}}", s, "t.tmpl:1:1: 'ups' is a list, used as a string");
	expect_err("{{http}}", s, "t.tmpl:1:1: 'http' is a flag, used as a string");
	expect_err("{{#if name}}x{{/if}}", s, "t.tmpl:1:1: 'name' is a string, used as a flag");
	expect_err("{{#each name as n}}x{{/each}}", s, "t.tmpl:1:1: 'name' is not a list");
	expect_err("{{#each ups}}{{/each}}", s, "t.tmpl:1:12: expected 'as <name>' in #each");
	expect_err("{{#each ups as}}{{/each}}", s, "t.tmpl:1:15: expected a name after 'as'");
	expect_err("{{#for x}}", s, "t.tmpl:1:4: unknown block '#for x'");
	expect_err("{{ name extra }}", s, "t.tmpl:1:9: unexpected 'e' in tag");
	expect_err("{{ 9x }}", s, "t.tmpl:1:4: expected a variable name");
	expect_err("{{ a. }}", s, "t.tmpl:1:6: expected a field name after '.'");
	expect_err("{{#if}}", s, "t.tmpl:1:6: expected a variable name");
	/* Unknown names in a branch or loop not taken are still errors. */
	expect_err("{{#if off}}\n  {{ nope }}\n{{/if}}", s, "t.tmpl:2:3: unknown variable 'nope'");
	expect_err("{{#if http}}{{else}}{{#each nolist as n}}{{/each}}{{/if}}", s,
	    "t.tmpl:1:21: unknown variable 'nolist'");
	expect_err("{{#each empty as e}}{{x.y}}{{/each}}", s,
	    "t.tmpl:1:21: unknown variable 'x.y' ('x' is not an #each name here)");
	/* A syntax error in a branch not taken is still an error. */
	expect_err("{{#if off}}{{ bad bad }}{{/if}}", s, "t.tmpl:1:19: unexpected 'b' in tag");
	tscope_free(s);
}

static void
test_injection(void **state)
{
	struct tscope *s = sample();

	tscope_set_str(s, "name", "web\n  server evil 1.2.3.4:80");
	expect_err("x\n  {{name}}", s, "t.tmpl:2:3: value of 'name' contains a newline: refused");
	tscope_set_str(s, "name", "web\rx");
	expect_err("{{name}}", s, "t.tmpl:1:1: value of 'name' contains a carriage return: refused");
	tscope_set_strn(s, "name", "we\0b", 4);
	expect_err("{{name}}", s, "t.tmpl:1:1: value of 'name' contains a NUL: refused");
	/* A template with a NUL byte is refused too. */
	{
		char *out;
		size_t len;

		assert_int_equal(template_render("n", "ab\0c", 4, s, 100, &out, &len, err, sizeof(err)), -1);
		assert_string_equal(err, "n:1:3: NUL byte in template");
	}
	/* An unused bad value does no harm. */
	expect("ok", s, "ok");
	tscope_free(s);
}

static void
test_output_cap(void **state)
{
	struct tscope *s = sample();
	char *out;
	size_t len;

	assert_int_equal(template_render("c", "0123456789", 10, s, 11, &out, &len, err, sizeof(err)), 0);
	assert_string_equal(out, "0123456789");
	free(out);
	assert_int_equal(template_render("c", "0123456789", 10, s, 10, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "c:1:1: output too large (more than 10 bytes)");
	assert_int_equal(template_render("c", "ab\n{{name}}", 11, s, 5, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "c:2:1: output too large (more than 5 bytes)");
	tscope_free(s);
}

static void
test_deep_nesting_refused(void **state)
{
	struct tscope *s = sample();
	char t[64 * 12 + 1] = "";
	size_t i;

	for (i = 0; i < 40; i++)
		memcpy(t + i * 12, "{{#if http}}", 12);
	t[40 * 12] = '\0';
	expect_err(t, s, "t.tmpl:1:385: blocks nested deeper than 32");
	tscope_free(s);
}

/* Nested #each with empty bodies emit nothing but multiply the work: bounded. */
static void
test_runaway_loop_refused(void **state)
{
	struct tscope *s = tscope_new(), *u;
	char t[32 * 48 + 1];
	size_t i, o = 0;
	char *out;
	size_t len;

	for (i = 0; i < 4; i++) {
		u = tscope_list_add(s, "l");
		tscope_set_str(u, "x", "1");
	}
	for (i = 0; i < 20; i++)
		o += (size_t)snprintf(t + o, sizeof(t) - o, "{{#each l as a%zu}}", i);
	for (i = 0; i < 20; i++)
		o += (size_t)snprintf(t + o, sizeof(t) - o, "{{/each}}");
	assert_int_equal(template_render("t.tmpl", t, o, s, 1 << 20, &out, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "template too complex (more than 4194304 steps)"));
	tscope_free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_substitution),
		cmocka_unit_test(test_each),
		cmocka_unit_test(test_if_unless),
		cmocka_unit_test(test_comment),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_injection),
		cmocka_unit_test(test_output_cap),
		cmocka_unit_test(test_deep_nesting_refused),
		cmocka_unit_test(test_runaway_loop_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
