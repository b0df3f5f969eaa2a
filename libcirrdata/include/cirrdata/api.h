/* cirrdata/api.h — symbol visibility of the public API. */
#ifndef CIRRDATA_API_H
#define CIRRDATA_API_H

#if defined(CD_BUILDING_LIBRARY) && defined(__GNUC__)
#define CD_API __attribute__((visibility("default")))
#else
#define CD_API
#endif

#endif
