#ifndef DECKHAND_CCURL_SHIM_H
#define DECKHAND_CCURL_SHIM_H

// Typed wrappers for libcurl's variadic calls, which Swift cannot call directly.

#include <curl/curl.h>
#include <stddef.h>
#include <sys/types.h>

/// A libcurl write or header callback: (data, size, count, userdata) -> bytes taken.
typedef size_t (*deckhand_curl_data_callback)(char *, size_t, size_t, void *);
/// A libcurl read callback: (buffer, size, count, userdata) -> bytes written.
typedef size_t (*deckhand_curl_read_callback)(char *, size_t, size_t, void *);
/// A libcurl transfer-info callback (CURLOPT_XFERINFOFUNCTION).
typedef int (*deckhand_curl_xferinfo_callback)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t);

static inline CURLcode deckhand_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_data_callback(
    CURL *handle, CURLoption option, deckhand_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_read_callback(
    CURL *handle, CURLoption option, deckhand_curl_read_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_setopt_xferinfo_callback(
    CURL *handle, CURLoption option, deckhand_curl_xferinfo_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode deckhand_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode deckhand_easy_getinfo_double(CURL *handle, CURLINFO info, double *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode deckhand_easy_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode deckhand_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode deckhand_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLMcode deckhand_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}

static inline CURLMcode deckhand_multi_setopt_pointer(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}

/// The running libcurl's version as 0xXXYYZZ (CURLVERSION_NOW is a macro Swift cannot see).
static inline unsigned int deckhand_curl_version_num(void) {
    return curl_version_info(CURLVERSION_NOW)->version_num;
}

#endif
