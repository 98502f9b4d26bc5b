#ifndef NOTIFY_CNATS_SHIM_H
#define NOTIFY_CNATS_SHIM_H
#include <nats/nats.h>
#endif
