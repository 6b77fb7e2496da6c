/* ascii: character classes and case mapping of US-ASCII, independent of
 * the locale (protocol grammars are ASCII; <ctype.h> follows LC_CTYPE and
 * is undefined for negative char values). */
#ifndef POSTHORN_ASCII_H
#define POSTHORN_ASCII_H

#include <stdbool.h>

static inline bool ascii_is_lower(char c) { return c >= 'a' && c <= 'z'; }
static inline bool ascii_is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static inline bool ascii_is_alpha(char c) { return ascii_is_lower(c) || ascii_is_upper(c); }
static inline bool ascii_is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool ascii_is_alnum(char c) { return ascii_is_alpha(c) || ascii_is_digit(c); }
static inline char ascii_lower(char c) { return ascii_is_upper(c) ? (char)(c + ('a' - 'A')) : c; }

#endif
