/*
 * text/dsml.h — internals shared by dsml.c (canonical DSML rendering, at-once parsing) and
 * dsml_stream.c (the streaming completion parser): the tag spellings (CHAT_ENCODING §6.1,
 * SERVER_CLI §5.5). Never renders whole conversations (chat.c does).
 */
#ifndef DS4_TEXT_DSML_H
#define DS4_TEXT_DSML_H

#include "text/chat.h"

/* Tag families accepted by the parser: the official one, then the two drifted spellings the
 * model is known to produce (SERVER_CLI §5.5 step 2). The family of the start tag fixes the
 * spelling of every inner tag. The renderer always writes family 0. */
#define DSML_N_FAMILIES 3
extern const char *const dsml_family_prefix[DSML_N_FAMILIES]; /* "｜DSML｜", "DSML｜", "" */

#endif
