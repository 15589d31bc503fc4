#ifndef COLO_CNETFILTERQUEUE_SHIM_H
#define COLO_CNETFILTERQUEUE_SHIM_H

#include <stdint.h>
#include <sys/types.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#endif
