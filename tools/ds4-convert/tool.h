/* tools/ds4-convert/tool.h — pieces of the ds4-convert program shared between its files. */
#ifndef DS4_TOOL_CONVERT_H
#define DS4_TOOL_CONVERT_H

/* --info: prints metadata (arrays abbreviated) and the tensor table of a GGUF; exit status. */
int cvt_info(const char *path);

#endif
