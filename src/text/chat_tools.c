/*
 * text/chat_tools.c — tool schemas to the official tool-description text (CHAT_ENCODING §5):
 * OpenAI {type:"function", function:{...}} elements are unwrapped to their function object,
 * Anthropic {name, description, input_schema} elements become {name, description,
 * parameters}, bare function objects stay as they are; each is json.dumps'ed (ensure_ascii=False) on its own line inside the §5.1
 * template. Does not decide where the block goes in the prompt (chat.c does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/chat.h"

/* CHAT_ENCODING §5.1, split around {tool_schemas}. */
static const char TOOLS_HEAD[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<｜DSML｜tool_calls>\" block like the following:\n"
    "\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
    "</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n"
    "\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n";
static const char TOOLS_TAIL[] =
    "\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool "
    "calls.\n";

/* The function object of one tools[] element (new reference), or NULL with err filled. */
static json_t *tool_function(const json_t *tool, const char *what, size_t i, ds4_error *err) {
    if (!json_is_object(tool)) {
        ds4_seterr(err, DS4_ERR_FORMAT, "%s[%zu]: expected an object", what, i);
        return NULL;
    }
    json_t *fn = json_object_get(tool, "function");
    if (fn) {
        if (!json_is_object(fn)) {
            ds4_seterr(err, DS4_ERR_FORMAT, "%s[%zu].function: expected an object", what, i);
            return NULL;
        }
        return json_incref(fn);
    }
    json_t *name = json_object_get(tool, "name");
    if (!json_is_string(name)) {
        ds4_seterr(err, DS4_ERR_FORMAT,
                   "%s[%zu]: neither an OpenAI tool (\"function\") nor an Anthropic tool "
                   "(\"name\", \"input_schema\")", what, i);
        return NULL;
    }
    json_t *params = json_object_get(tool, "input_schema");
    if (!params) return json_incref((json_t *)tool); /* already a bare function object */
    /* Anthropic {name, description, input_schema, cache_control...}: the function object the
     * official template expects, in its key order. */
    json_t *desc = json_object_get(tool, "description");
    json_t *fn_obj = json_object();
    if (!fn_obj) { ds4_seterr(err, DS4_ERR_NOMEM, "%s: out of memory", what); return NULL; }
    json_object_set(fn_obj, "name", name);
    if (desc) json_object_set(fn_obj, "description", desc);
    json_object_set(fn_obj, "parameters", params);
    return fn_obj;
}

ds4_status chat_tools_check(const json_t *tools, const char *what, ds4_error *err) {
    if (!json_is_array(tools))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: expected an array of tools", what);
    for (size_t i = 0; i < json_array_size(tools); i++) {
        json_t *fn = tool_function(json_array_get(tools, i), what, i, err);
        if (!fn) return err ? err->code : DS4_ERR_FORMAT;
        json_decref(fn);
    }
    return DS4_OK;
}

ds4_status chat_tools_block(chat_buf *out, const json_t *tools, const char *what,
                            ds4_error *err) {
    if (!json_is_array(tools))
        return ds4_seterr(err, DS4_ERR_FORMAT, "%s: expected an array of tools", what);
    chat_buf_add(out, TOOLS_HEAD, sizeof TOOLS_HEAD - 1);
    for (size_t i = 0; i < json_array_size(tools); i++) {
        json_t *fn = tool_function(json_array_get(tools, i), what, i, err);
        if (!fn) return err ? err->code : DS4_ERR_FORMAT;
        if (i) chat_buf_addc(out, '\n');
        /* The schema is client text: a description saying "<｜User｜>" stays text. */
        chat_buf_lit_begin(out);
        chat_json_dumps(out, fn, false);
        chat_buf_lit_end(out);
        json_decref(fn);
    }
    chat_buf_add(out, TOOLS_TAIL, sizeof TOOLS_TAIL - 1);
    return chat_buf_status(out, what, err);
}

ds4_status ds4_chat_render_tools(const char *tools_json, char **out, size_t *out_bytes,
                                 ds4_error *err) {
    if (!tools_json || !out) return ds4_seterr(err, DS4_ERR_INVALID_ARG, "tools: NULL argument");
    json_error_t jerr;
    json_t *tools = json_loads(tools_json, JSON_DECODE_ANY, &jerr);
    if (!tools)
        return ds4_seterr(err, DS4_ERR_FORMAT, "tools: invalid JSON at line %d column %d: %s",
                          jerr.line, jerr.column, jerr.text);
    chat_buf b = {0};
    ds4_status st = chat_tools_block(&b, tools, "tools", err);
    json_decref(tools);
    if (st != DS4_OK) { chat_buf_free(&b); return st; }
    *out = chat_buf_take(&b, out_bytes);
    return *out ? DS4_OK : ds4_seterr(err, DS4_ERR_NOMEM, "tools: out of memory");
}
